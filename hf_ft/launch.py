"""`python -m hf_ft.launch`: `make train ZERO=N`: run_qa.py through accelerate launch with a ds_configs/ file (hf_ft.training.launch)."""

from hf_ft.training.launch import main

if __name__ == "__main__":
    main()
