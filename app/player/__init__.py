"""Playback over sounddevice, the player bar, waveform thumbnails."""
