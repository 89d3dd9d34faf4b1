"""Experiments on fine-tuning: full, frozen, LoRA and QLoRA on the book's model (stage 15)."""
