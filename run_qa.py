#!/usr/bin/env python
"""Fine-tune a Chinese encoder on TMMLU+ multiple-choice questions.

    accelerate launch run_qa.py --model_name_or_path bert-base-chinese --output_dir out/bert-tmmlu
    python run_qa.py config.yaml --learning_rate 3e-5

Arguments: hf_ft.arguments (ModelArguments, DataArguments, RunArguments) + transformers.TrainingArguments.
"""

from hf_ft.cli import train_command

if __name__ == "__main__":
    import sys

    train_command(sys.argv[1:])
