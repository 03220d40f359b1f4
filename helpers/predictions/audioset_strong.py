"""KD targets of AudioSet-strong pre-training: a teacher's strong logits on the training clips, and ensembles.

``python -m ex_audioset_strong store_predictions with arch=atst_frame ckpt_path=<teacher> [kd_out=...]`` runs the
teacher (a training checkpoint of this experiment, its exported ``.pt``, or a PretrainedSED release file) on the
first 10 s of every clip of ``store_splits`` and writes its strong logits in PretrainedSED's KD file format
(``data_util.kd_logits``; float16 [clips, classes, 250]), row by row, so memory stays bounded.
``python -m ex_audioset_strong ensemble_predictions with ensemble_files='("a.hdf5", "b.hdf5")' kd_out=ens.hdf5``
averages the logits of several such files (``ensemble_weights`` optional): the KD file of a teacher ensemble,
used by a student with ``training_strong.kd_logits=ens.hdf5``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

import configs
import configs.audioset_strong as as_config
from data_util.audioset_strong import FRAME_HOP_SECONDS, NUM_FRAMES, AudioSetStrongDataset, load_dataset_dict
from data_util.kd_logits import StrongKDWriter, ensemble_strong_kd
from models.audioset_strong import load_as_strong_model

log = logging.getLogger(__name__)

KD_FOLDER = "kd_logits"


def _output(config: Mapping, name: str) -> Path:
    out = Path(config["kd_out"]) if config["kd_out"] else as_config.dataset_dir(config) / KD_FOLDER / f"{name}.hdf5"
    if out.exists() and not config["overwrite"]:
        raise FileExistsError(f"{out} exists; pass overwrite=True or another kd_out=<file>")
    return out


def store_predictions(config: Mapping, *, progress: bool = True) -> Path:
    """Write the teacher's strong logits on ``store_splits`` to a KD file; returns its path."""
    source = config["ckpt_path"] or (config[config["arch"]]["pretrained_name"] if config.get("arch") else None)
    if not source:
        raise configs.ConfigError("store_predictions needs the teacher: ckpt_path=<checkpoint or .pt> (or "
                                  "<arch>.pretrained_name=<AudioSet-strong model file>)")
    model = load_as_strong_model(source, model_dir=config["model_path"])
    if config.get("arch") not in (None, model.config["arch"]):
        log.warning("arch=%s in the config, but %s holds a %s model; using the file's", config["arch"], source,
                    model.config["arch"])
    import datasets  # lazy: the Hugging Face stack loads only where the prepared dataset is read

    dataset_dict = load_dataset_dict(as_config.dataset_dir(config))
    rows = datasets.concatenate_datasets([dataset_dict[split] for split in config["store_splits"]])
    clips = AudioSetStrongDataset(rows, model.classes, training=False)
    batch_size = int(config["validation_strong"]["batch_size"])
    loader = DataLoader(clips, batch_size=batch_size, num_workers=int(config["validation_strong"]["num_workers"]))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device)
    out = _output(config, f"{model.name}_{'+'.join(config['store_splits'])}")
    names = [name[: -len(".mp3")] if name.endswith(".mp3") else name for name in rows["filename"]]
    with StrongKDWriter(out, names, classes=model.class_names, num_frames=NUM_FRAMES, model=f"{model.name} (strong)",
                        frame_hop=FRAME_HOP_SECONDS) as writer, torch.no_grad():
        for batch in tqdm(loader, desc="teacher logits", unit="batch", disable=not progress):
            logits = model(batch["audio"].to(device)).float().transpose(1, 2).cpu().numpy()  # [B, C, T]
            writer.write(batch["filename"], logits)
    return out


def ensemble_predictions(config: Mapping) -> Path:
    """The (weighted) mean of the KD files ``ensemble_files`` into ``kd_out``; returns its path."""
    files = list(config["ensemble_files"])
    if len(files) < 2:
        raise configs.ConfigError("ensemble_predictions needs at least two KD files: "
                                  "ensemble_files='(\"teacher1.hdf5\", \"teacher2.hdf5\")'")
    weights = config["ensemble_weights"]
    if weights is not None and (len(weights) != len(files) or sum(weights) <= 0):
        raise configs.ConfigError(f"ensemble_weights={tuple(weights)} needs one weight >= 0 per file "
                                  f"({len(files)}) and a positive sum")
    out = _output(config, "ensemble_" + "+".join(Path(f).stem for f in files))
    return ensemble_strong_kd(files, out, weights)


__all__ = ["store_predictions", "ensemble_predictions"]
