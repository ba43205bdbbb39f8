"""Train (or find cached) the classifier behind the image-quality metrics and print its accuracy.

    python -m experiments.train_classifier data=mnist5k             # 4,000 training images, no download
    python -m experiments.train_classifier data=digits
    python -m experiments.train_classifier data=mnist retrain=true  # train again, replace the cached one
    python -m experiments.train_classifier data=cifar10 classifier.epochs=20 classifier.width=32

The classifier is trained on the training split, its accuracy measured on the held-out split, and
both are saved to ``<data.root>/classifiers/<data key>.pt`` (or ``cache_dir``), where training runs
on the same data find it.
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from gan.config import ConfigError, check_group_choices, validate

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train_classifier")
def main(cfg: DictConfig) -> float:
    try:
        validate(cfg)
        from hydra.errors import InstantiationException
        from hydra.utils import instantiate

        from gan.image_eval import classifier_path, load_or_train_classifier

        try:
            data = instantiate(cfg.data)
        except InstantiationException as exc:
            if isinstance(exc.__cause__, ConfigError):
                raise exc.__cause__ from None
            raise
        if not hasattr(data, "split"):
            raise ConfigError(f"data={data.__class__.__name__}: the classifier needs a labelled image set")
        path = classifier_path(data, cfg.cache_dir)
        model = load_or_train_classifier(
            data, cfg.cache_dir, device=cfg.device, retrain=cfg.retrain, seed=cfg.seed, **cfg.classifier
        )
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"held-out accuracy: {model.heldout_accuracy:.4f} ({data.num_heldout} images)\nclassifier: {path}")
    return model.heldout_accuracy


def cli() -> None:
    try:
        check_group_choices(arg for arg in sys.argv[1:] if not arg.startswith("-"))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Exception:
        pass  # malformed overrides: let Hydra report them in its own words
    main()


if __name__ == "__main__":
    cli()
