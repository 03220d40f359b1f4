import torch

from data_util import classes as C


def test_class_order_matches_reference_encoder():
    assert C.NUM_CLASSES == 27
    assert C.CLASSES[:10] == C.DESED_CLASSES and C.CLASSES[10:] == C.MAESTRO_CLASSES
    assert C.CLASSES[0] == "Alarm_bell_ringing" and C.CLASSES[9] == "Vacuum_cleaner"
    assert C.CLASSES[10] == "cutlery and dishes" and C.CLASSES[12] == "people talking"
    assert C.CLASSES[26] == "birds_singing"


def test_maestro_eval_subset():
    assert len(C.MAESTRO_EVAL_CLASSES) == 11
    assert set(C.MAESTRO_EVAL_CLASSES) <= set(C.MAESTRO_CLASSES)
    assert "announcement" not in C.MAESTRO_EVAL_CLASSES


def test_masks_per_domain():
    desed, maestro = C.class_mask("desed"), C.class_mask("maestro")
    assert desed.dtype == torch.bool and desed.shape == (27,)
    assert desed.sum() == 12 and maestro.sum() == 19
    # the fixture's masked outputs use exactly this DESED mask: 10 DESED classes + indices 10 and 12
    assert torch.equal(torch.nonzero(desed).flatten(), torch.tensor(list(range(10)) + [10, 12]))
    assert maestro[C.CLASS_TO_INDEX["Speech"]] and maestro[C.CLASS_TO_INDEX["Dishes"]]
    assert not maestro[C.CLASS_TO_INDEX["Dog"]]


def test_unknown_domain_and_label_errors():
    import pytest

    with pytest.raises(ValueError, match="unknown domain"):
        C.class_mask("audioset")
    with pytest.raises(KeyError, match="Doggo"):
        C.class_indices(["Dog", "Doggo"])


def test_aliases_duplicate_events():
    assert C.apply_aliases(["children voices", "car"], C.MAESTRO_DESED_ALIAS) == ["children voices", "car", "Speech"]
    assert C.apply_aliases(["Dishes", "Speech", "Cat"], C.DESED_MAESTRO_ALIAS) == [
        "Dishes", "Speech", "Cat", "cutlery and dishes", "people talking"]
    # every alias target is a valid class of the *other* domain's clips
    for src, dst in C.MAESTRO_DESED_ALIAS.items():
        assert C.class_mask("maestro")[C.CLASS_TO_INDEX[dst]]
    for src, dst in C.DESED_MAESTRO_ALIAS.items():
        assert C.class_mask("desed")[C.CLASS_TO_INDEX[dst]]


def test_median_windows():
    assert C.MEDIAN_WINDOWS[:10] == (3, 9, 9, 5, 5, 5, 9, 7, 11, 9)
    assert C.MEDIAN_WINDOWS[10:] == (7, 3, 9, 13, 7, 1, 13, 3, 13, 7, 5, 5, 1, 13, 17, 13, 15)


def test_config_median_window_is_the_same_table():
    import configs

    assert tuple(configs.default_config(1)["median_window"]) == C.MEDIAN_WINDOWS
