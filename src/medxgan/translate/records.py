"""What is read back from a translate (CycleGAN / pix2pix) run's ``config.json``: its ``train`` record,
the settings the generators are built from (``translate.apply``) and a resume continues with
(``translate.train``), checked by ``runtime.records.check_record`` (one line naming the file and field)."""

from __future__ import annotations

from medxgan.runtime.records import flag, integer, number, obj, text

_TRAIN_FIELDS = {
    "size": integer(min=4), "crop": integer(min=4, null=True), "load_size": integer(min=0),
    "epochs": integer(min=0), "epochs_decay": integer(min=0, null=True),
    "ngf": integer(min=1, required=True), "ndf": integer(min=1), "blocks": integer(min=0, required=True),
    "upsample": text(("resize", "transpose"), required=True),
    "batch_size": integer(min=1), "lr": number(min=0), "beta1": number(min=0, max=1),
    "lambda_cycle": number(min=0), "lambda_identity": number(min=0), "lambda_l1": number(min=0),
    "pool_size": integer(min=0, null=True), "paired": flag(), "pairs": text(null=True), "paired_cycle": flag(),
    "flip": flag(), "rotations": flag(), "seed": integer(), "checkpoint_every": integer(min=0),
    "keep_checkpoints": integer(min=0), "samples": integer(min=0), "log_every": integer(min=1),
    "channels_a": integer(min=1, max=4, required=True), "channels_b": integer(min=1, max=4, required=True),
    "amp": text(), "channels_last": flag(), "compile": flag(), "ema_decay": number(min=0, max=1),
}

TRANSLATE_RUN_FIELDS = {"size": integer(min=4, required=True), "train": obj(_TRAIN_FIELDS, required=True)}  # size: evaluate's
