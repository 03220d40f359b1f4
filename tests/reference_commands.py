"""The commands of the reference README (CPJKU/cpjku_dcase24), verbatim: kept in ``helpers.reference_recipe`` (the
demo compares its settings with them); re-exported here for the tests."""
from helpers.reference_recipe import ALL, STAGE1_TRAIN, STAGE2_PREDICTIONS, STAGE2_TRAIN

__all__ = ["ALL", "STAGE1_TRAIN", "STAGE2_TRAIN", "STAGE2_PREDICTIONS"]
