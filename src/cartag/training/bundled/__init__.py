"""The bundled model: its corpus, its build (heads, config, card) and the backbone
fine-tuning."""
