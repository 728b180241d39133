"""Data: tokenizers (byte / SentencePiece), the offline TFDS corpora, and the input pipeline."""
