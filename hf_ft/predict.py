"""`python -m hf_ft.predict`: answer questions with a trained model (hf_ft.evaluation.predict)."""

import sys

from hf_ft.evaluation.predict import main

if __name__ == "__main__":
    main(sys.argv[1:])
