"""Config keys and metric names that belong to one task: each task's config_problems refuses the other's."""

SFT_ONLY_DATA = ("chat_template", "train_on", "overlong", "packing")
CLASSIFICATION_METRICS = ("macro_f1", "accuracy")
SAMPLE_METRICS = ("exact_match", "token_f1", "rouge_l")  # scores of generated answers (task sft)
