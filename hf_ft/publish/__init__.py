"""What leaves the machine: the model card that claims only what the run recorded, and the push of a finished run."""
