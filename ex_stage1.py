"""Stage 1: train the CRNN on top of a frozen transformer (ATST-Frame, fPaSST or BEATs).

    python -m ex_stage1 with arch=atst_frame [key=value ...]
    python -m ex_stage1 print_config with arch=atst_frame
    python -m ex_stage1 check_data [with base_path=/path/to/dataset]
    python -m ex_stage1 prepare_data

All keys and defaults: ``configs.default_config(1)``; docs/CONFIG.md.
"""
from sacred import Experiment

from helpers.experiment import run, setup_experiment

STAGE = 1
ex = Experiment("dcase24_t4_desed", save_git_info=False)
setup_experiment(ex, STAGE)

if __name__ == "__main__":
    run(ex)
