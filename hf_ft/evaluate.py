"""`python -m hf_ft.evaluate`: original vs fine-tuned on held-out questions (hf_ft.evaluation.evaluate)."""

from hf_ft.evaluation.evaluate import main

if __name__ == "__main__":
    main()
