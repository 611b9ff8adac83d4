#!/usr/bin/env python
"""Fine-tune a Chinese encoder on TMMLU+ multiple-choice questions.

    accelerate launch run_qa.py --model_name_or_path bert-base-chinese --output_dir out/bert-tmmlu
    python run_qa.py config.yaml --learning_rate 3e-5

Arguments: hf_ft.config.arguments (ModelArguments, DataArguments, RunArguments) + transformers.TrainingArguments,
parsed once by HfArgumentParser; `python run_qa.py --help` lists them all.
"""

import sys

from hf_ft.config.arguments import parse_args
from hf_ft.core.errors import run_user_errors
from hf_ft.training.run import train

if __name__ == "__main__":
    run_user_errors(lambda: train(parse_args(sys.argv[1:])))
