"""Every flag of run_qa.py, declared: what it needs, what it excludes, that hf_ft's own flow replaces it, or
that it stands alone. `tests/test_arguments.py` walks every flag (transformers' included, so a flag a new
transformers adds fails the test until it is declared here) and every helper command's flags.

Needs and excludes are checked on what the user gave (`refuse_combinations`), before any work; a flag whose
effect hf_ft replaces is refused when given a value hf_ft would not honour.
"""

from __future__ import annotations

from ..inputs.formulations import FORMULATIONS, get_formulation

# (given, the one it is ignored next to, why). Both given: refused.
CONFLICTS = [
    *[("data_dir", name, "a run reads one source: the folder, or the files") for name in (
        "train_file", "validation_file", "test_file")],
    *[(source, name, "the data comes from there, not from the hub") for source in (
        "data_dir", "train_file") for name in ("dataset_name", "dataset_revision")],
    ("validation_file", "folds", "each fold's validation slice is carved from the training pool, so a fixed "
     "validation file has no place; pass its rows as --train_file"),
    *[(loop, "push_to_hub", f"every {kind} would push to one repository, each overwriting the last; push the one "
       f"you choose when they are done (`hf-ft push <output_dir>/{kind}-<n> --repo_id ...`)")
      for loop, kind in (("seeds", "seed"), ("folds", "fold"))],
]

# (given, needs one of these, what it is for). Given without any of them: refused.
_CORPUS_SEARCH = ("retrieval_corpus_config", "retrieval_corpus_revision", "retrieval_corpus_split",
                  "retrieval_text_column", "passage_chars", "passage_overlap", "retrieval_query", "retriever")
_PUSH = ("hub_model_id", "hub_private_repo", "hub_revision", "push_test_items")
REQUIRES = [
    *[(name, ("retrieval_corpus",), "it sets how the corpus is read and searched") for name in _CORPUS_SEARCH],
    *[(name, ("retrieval_corpus", "retrieval_contexts"), "it sets the passages each question reads")
      for name in ("retrieval_k", "leak_policy")],
    *[(name, ("push_to_hub",), "it sets where and what a push sends") for name in _PUSH],
    ("contamination", ("extra_data",), "it sets what happens to extra rows that copy evaluated questions"),
    ("early_stopping_threshold", ("early_stopping_patience",), "it sets what early stopping counts as better"),
    ("gradient_checkpointing_kwargs", ("gradient_checkpointing",), "it sets how checkpointing recomputes"),
    ("activation_checkpointing_kwargs", ("activation_checkpointing",), "it sets how checkpointing recomputes"),
    ("liger_kernel_config", ("use_liger_kernel",), "it configures the Liger kernels"),
    ("fsdp_config", ("fsdp",), "it configures FSDP"),
    ("trust_deepspeed_checkpoint", ("deepspeed",), "it is about resuming a DeepSpeed checkpoint"),
    ("require_deepspeed", ("deepspeed",), "it makes a DeepSpeed run fail instead of falling back"),
    ("fold", ("folds",), "it picks one of the --folds K folds"),
]


def _formulations(test) -> str:
    """The --formulation values whose Formulation passes `test` (each formulation answers for itself)."""
    return "--formulation " + " or ".join(name for name, kind in FORMULATIONS.items() if test(kind))


def _strategy(value) -> str:
    return str(value).split(".")[-1].lower()


# (given, the values it needs, why): a flag that acts only under another flag's value.
VALUE_REQUIRES = [
    ("eval_steps", lambda v: _strategy(v["eval_strategy"]) == "steps", "--eval_strategy steps"),
    ("eval_delay", lambda v: _strategy(v["eval_strategy"]) != "no", "evaluations (--eval_strategy epoch or steps)"),
    ("save_steps", lambda v: _strategy(v["save_strategy"]) == "steps", "--save_strategy steps"),
    ("logging_steps", lambda v: _strategy(v["logging_strategy"]) == "steps", "--logging_strategy steps"),
    ("mlm_probability", lambda v: get_formulation(v["formulation"]).vocabulary_head,
     _formulations(lambda f: f.vocabulary_head)),
    *[(name, lambda v, name=name: name in get_formulation(v["formulation"]).rotations_flags,
       _formulations(lambda f, name=name: name in f.rotations_flags)) for name in ("joint_rotations",
                                                                                   "joint_eval_rotations")],
    ("folds", lambda v: get_formulation(v["formulation"]).scores_options,
     _formulations(lambda f: f.scores_options) + " (out-of-fold predictions)"),
    ("split_ratios", lambda v: v["split_scheme"] != "official", "--split_scheme resplit (or auto with one flat file)"),
    ("validation_fraction", lambda v: v["split_scheme"] != "resplit", "--split_scheme official (or auto)"),
    ("dataloader_prefetch_factor", lambda v: (v["dataloader_num_workers"] or 0) > 0, "--dataloader_num_workers 1+"),
    ("dataloader_persistent_workers", lambda v: (v["dataloader_num_workers"] or 0) > 0,
     "--dataloader_num_workers 1+"),
    *[(name, lambda v: "trackio" in (v["report_to"] or []), "--report_to trackio")
      for name in ("trackio_space_id", "trackio_bucket_id", "project")],
]

# TrainingArguments flags whose effect hf_ft's own flow replaces: {flag: (the values hf_ft honours, why)}. Given
# another value, refused: it would do nothing, or break what hf_ft guarantees.
REPLACED = {
    "do_train": ((True,), "hf_ft always trains; score a finished run with `python -m hf_ft.evaluate`"),
    "do_eval": ((True,), "the run evaluates per --eval_strategy and scores validation and test at its end"),
    "do_predict": ((True,), "the test split is always predicted at the end (test_predictions.jsonl)"),
    "prediction_loss_only": ((False,), "hf_ft's evaluation reports accuracy, which needs the predictions"),
    "eval_do_concat_batches": ((True,), "hf_ft's metrics read every batch's predictions at once"),
    "batch_eval_metrics": ((False,), "hf_ft computes its metrics over the whole evaluation set"),
    "hub_strategy": (("end",), "hf_ft pushes the finished run once, with its card"),
    "hub_always_push": ((False,), "hf_ft pushes once, after the run is marked finished"),
    "length_column_name": (("length",), "hf_ft's length-grouped sampler reads its own `length` column"),
    "remove_unused_columns": ((False,), "hf_ft's collators pick the model inputs and the sampler needs `length`"),
    "ignore_data_skip": ((False,), "a resumed run replays the data order so it ends where an uninterrupted run ends"),
    "label_names": ((None, [], ["labels"]), "hf_ft's collators name the labels `labels`"),
}

# Flags that act alone, whatever else is given (each read where its concern lives).
INDEPENDENT = frozenset("""
    model_name_or_path tokenizer_name model_revision cache_dir trust_remote_code use_kernels formulation
    config_overrides subjects data_dir train_file validation_file test_file dataset_name dataset_revision
    split_scheme on_bad_rows max_seq_length pad_to_multiple_of max_unk_rate drop_question max_eval_samples
    max_test_samples split_seed preprocessing_num_workers extra_data retrieval_corpus retrieval_contexts
    overwrite_output_dir auto_bf16 skip_memory_check sort_eval_by_length early_stopping_patience profile_steps
    cudnn_attention seeds
    output_dir per_device_train_batch_size num_train_epochs max_steps learning_rate lr_scheduler_type
    lr_scheduler_kwargs warmup_steps optim optim_args weight_decay adam_beta1 adam_beta2 adam_epsilon
    optim_target_modules gradient_accumulation_steps average_tokens_across_devices max_grad_norm
    label_smoothing_factor bf16 fp16 bf16_full_eval fp16_full_eval tf32 activation_checkpointing
    gradient_checkpointing torch_compile torch_compile_backend torch_compile_mode use_liger_kernel use_cache
    neftune_noise_alpha torch_empty_cache_steps auto_find_batch_size logging_strategy logging_first_step
    log_on_each_node logging_nan_inf_filter include_num_input_tokens_seen log_level log_level_replica disable_tqdm
    report_to run_name trackio_static_space_id eval_strategy per_device_eval_batch_size eval_on_start
    eval_use_gather_object eval_accumulation_steps include_for_metrics save_only_model save_strategy
    save_on_each_node save_total_limit enable_jit_checkpoint push_to_hub hub_token load_best_model_at_end
    metric_for_best_model greater_is_better restore_callback_states_from_checkpoint full_determinism seed data_seed
    use_cpu accelerator_config parallelism_config dataloader_drop_last dataloader_num_workers dataloader_pin_memory
    dataloader_multiprocessing_context dataloader_in_order train_sampling_strategy ddp_find_unused_parameters
    ddp_bucket_cap_mb ddp_broadcast_buffers ddp_static_graph ddp_backend ddp_timeout fsdp deepspeed debug
    skip_memory_metrics resume_from_checkpoint local_rank
""".split())


def declared() -> set[str]:
    """Every flag with a declaration."""
    return (set(INDEPENDENT) | set(REPLACED) | {n for n, _, _ in REQUIRES} | {n for n, _, _ in VALUE_REQUIRES}
            | {n for pair in CONFLICTS for n in pair[:2]})


def _presence_problems(given: set[str], requires, conflicts, flag=lambda name: f"--{name}") -> list[str]:
    """A flag given beside the one that makes it ignored, or without any of the ones it works with."""
    problems = [f"{flag(ignored)} with {flag(source)}: {why}; drop one" for source, ignored, why in conflicts
                if source in given and ignored in given]
    return problems + [f"{flag(name)} without {' or '.join(flag(n) for n in needs)}: has no effect ({why})"
                       for name, needs, why in requires if name in given and not any(n in given for n in needs)]


def combination_problems(values: dict, given: set[str]) -> list[str]:
    """One line per flag the user gave that this combination would ignore, or that hf_ft replaces."""
    problems = _presence_problems(given, REQUIRES, CONFLICTS)
    problems += [f"--{name}: has no effect without {what}" for name, acts, what in VALUE_REQUIRES
                 if name in given and name in values and not acts(values)]
    problems += [f"--{name} {values.get(name)}: {why}; leave the flag out" for name, (honoured, why) in REPLACED.items()
                 if name in given and values.get(name) not in honoured]
    return problems


def mode_problems(values: dict, given: set[str]) -> list[str]:
    """Files given for one role whose rows would end up in another: with --split_scheme resplit every file is
    pooled and split again, so a --validation_file or --test_file would not be what it says."""
    if values.get("split_scheme") != "resplit":
        return []
    return [f"--{name} with --split_scheme resplit: its rows would be pooled and split again; use "
            "--split_scheme official to keep them as given" for name in ("validation_file", "test_file")
            if name in given]


# The other entry points: {command: (requires, conflicts, independent)}, flags as their parsers name them
# (dashes as underscores). Checked by `command_problems` on what the user gave.
COMMANDS = {
    "evaluate": (
        [("judge_concurrency", ("judge",), "it sets how many requests go to a remote judge"),
         ("judge_max_items", ("judge", "judge_model"), "it limits what the judge reads"),
         ("audit_choices_only", ("audit",), "it sets what the audit trains"),
         ("subjects", ("data_dir",), "it picks the subjects of a --data_dir")],
        [("data_dir", "test_file", "the items come from one place")],
        frozenset("""original finetuned models reference test_file data_dir output_dir overwrite_output_dir max_items
                     audit allow_overlap seed judge judge_model gold_passages scorer joint_eval_rotations
                     batch_size batch_tokens max_seq_length max_unk_rate use_cpu trust_remote_code
                     use_kernels""".split())),
    "predict": (
        [("choices", ("question",), "they are the options of --question"),
         ("json", ("question",), "it sets how one --question's answer is printed"),
         ("top_k", ("fill",), "it sets how many tokens --fill lists")],
        [],
        frozenset("""model question input interactive fill output overwrite scorer joint_eval_rotations batch_size
                     batch_tokens max_seq_length max_unk_rate use_cpu trust_remote_code use_kernels""".split())),
    "push": ([], [], frozenset("""output_dir repo_id revision private dry_run include_checkpoints
                                  include_rejected_rows include_test_items commit_message""".split())),
    "make-demo-data": (
        [("artifact_subjects", ("plant_artifact",), "it picks where the artifact is planted"),
         ("artifact_rate", ("plant_artifact",), "it sets how often the artifact is planted")],
        [], frozenset("out_dir overwrite rows_per_subject seed plant_artifact".split())),
    "make-open-book-data": ([], [], frozenset("out_dir overwrite rows_per_subject seed".split())),
    "make-tiny-model": (
        [("pretrain_epochs", ("pretrain_sentences",), "it sets how long the masked-LM pretraining runs")],
        [], frozenset("""out_dir overwrite vocab_from hidden_size layers heads intermediate_size seed
                         pretrain_sentences""".split())),
}


def command_declared(command: str) -> set[str]:
    requires, conflicts, independent = COMMANDS[command]
    return set(independent) | {n for n, _, _ in requires} | {n for pair in conflicts for n in pair[:2]}


def command_problems(command: str, given: set[str], dashes: bool = False) -> list[str]:
    """The needs and excludes of `command`'s flags, on the names the user gave (`dashes`: the command spells
    its flags --like-this)."""
    requires, conflicts, _ = COMMANDS[command]
    return _presence_problems(given, requires, conflicts,
                              lambda name: "--" + (name.replace("_", "-") if dashes else name))
