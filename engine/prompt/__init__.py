"""Text that reaches the model: lyrics cleaning, the prompt template, the tokenizer with pinned specials."""
