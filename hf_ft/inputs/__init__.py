"""How a row becomes model inputs: the formulation registry (per_choice, joint, mlm), their encoders and collators, and
model loading with the head each needs."""
