"""The schemas of the classifier records medxgan reads back (checked by ``runtime.records.check_record``):
a classifier run's ``config.json``, the adapter settings recorded with it, in a GAN run's ``classifier``
record and in a factory classifier's ``classifier.json`` copy. A wrong value is refused in one line
naming the file and the field before any network is built."""

from __future__ import annotations

from medxgan.classifiers.adapter import OUTPUT_KINDS
from medxgan.runtime.records import Field, array, flag, integer, number, obj, text

_CLASS_LIST = array(integer(min=0), null=True)

# input_size: one side (a square) or [H, W], each at least 1 px
_INPUT_SIZE = Field(("int", "list"), null=True, min=1, item=integer(min=1), length=2)

# Preprocessing.from_dict / Target.from_dict take these keys as keyword arguments: no others
PREPROCESSING_RECORD = obj({
    "input_size": _INPUT_SIZE,
    "input_channels": integer(min=1, max=4, null=True),
    "input_range": text(("-1,1", "0,1")),
    "mean": array(number(), null=True),
    "std": array(number(min=1e-12), null=True),
}, closed=True, null=True)

TARGET_RECORD = obj({"positive": _CLASS_LIST, "negative": _CLASS_LIST, "multilabel": integer(min=0, null=True)},
                    closed=True, null=True)

# an adapter's describe(): the settings that are read back (others -- name, descriptions -- are information)
ADAPTER_RECORD = obj({
    "output": text(OUTPUT_KINDS, null=True),
    "positive_index": integer(min=0, null=True),
    "target": TARGET_RECORD,
    "preprocessing": PREPROCESSING_RECORD,
}, null=True)

# a classifier run's config.json (medxgan train-classifier): what _load_run builds the network from
CLASSIFIER_RUN_FIELDS = {
    "arch": text(required=True),
    # the keyword arguments of the built-in architectures (classifiers.architectures)
    "arch_kwargs": obj({"in_channels": integer(min=1, max=4), "image_size": integer(min=1), "width": integer(min=1),
                        "dropout": number(min=0, max=1)}, closed=True, null=True),
    "adapter": ADAPTER_RECORD,
    "epochs": integer(min=0, null=True),
    "augment": flag(null=True),
    # what a --resume compares and takes back (cli.common.take_run_settings)
    "settings": obj({"arch": text(), "size": integer(min=1), "channels": integer(min=1, max=4, null=True), "seed": integer(),
                     "batch_size": integer(min=2), "lr": number(min=0), "weight_decay": number(min=0), "augment": flag(),
                     "epochs": integer(min=1)}, null=True),
}

# a factory classifier's classifier.json copy (classifiers.storage.store_classifier)
COPY_RECORD_FIELDS = {
    "format": text(required=True),
    "spec": text(null=True),
    "weights": text(null=True),
    "fingerprint": text(null=True),
    "adapter": ADAPTER_RECORD,
}

# the ``classifier`` (and ``oracle``) record of a GAN run's config.json (gan.train): where its classifier lives
RECORDED_CLASSIFIER = obj({
    "source": text(null=True),
    "local": text(null=True),
    "fingerprint": text(null=True),
    "adapter": ADAPTER_RECORD,
    "check": obj(null=True),
}, null=True)
