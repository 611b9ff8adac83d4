"""One training run: the spine (claim, prepare data, prepare inputs, begin, train, evaluate, finish), the Trainer as
hf_ft uses it, callbacks, seeds, the memory estimate, throughput and profiling, the DeepSpeed launcher."""
