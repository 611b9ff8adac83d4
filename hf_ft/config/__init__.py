"""The command line: hf_ft's argument dataclasses beside TrainingArguments, their defaults and rules, and every refusal
of settings that cannot make sense, made before any work."""
