"""hf_ft: fine-tune Chinese BERT-style encoders on TMMLU+ with transformers.Trainer."""

__version__ = "0.1.0"
