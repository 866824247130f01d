"""PCB person re-identification: export, preprocess, infer, evaluate and benchmark."""

__version__ = "0.1.0"
