"""Beyond one Mac: the upstream Khala server as an engine (``client.RemotePipeline``) and our
engine as one of its workers (``worker``, ``khala worker``). ``protocol`` holds the upstream
field names and the conversions. Nothing here imports torch except the worker's pipeline."""
