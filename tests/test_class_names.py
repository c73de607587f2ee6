"""Class names: the packaged ImageNet list, name/synonym/index resolution, suggestions, custom names."""

import json
from importlib import resources

import pytest

from ditkit.cli.main import main
from ditkit.errors import UserError
from ditkit.generation.class_names import ClassNames, imagenet_wnids, normalize_name, resolve_class


def test_imagenet_file_has_the_1000_ilsvrc_classes_in_synset_order():
    entries = json.loads(resources.files("ditkit.data").joinpath("imagenet_classes.json").read_text())
    assert [e["index"] for e in entries] == list(range(1000))
    wnids = imagenet_wnids()
    # ILSVRC-2012 labels are the synsets in sorted WordNet-id order.
    assert len(set(wnids)) == 1000 and wnids == sorted(wnids)
    spot = {
        0: ("n01440764", "tench"),
        1: ("n01443537", "goldfish"),
        207: ("n02099601", "golden retriever"),
        388: ("n02510455", "giant panda"),
        852: ("n04409515", "tennis ball"),
        999: ("n15075141", "toilet tissue"),
    }
    names = ClassNames.imagenet()
    for index, (wnid, name) in spot.items():
        assert wnids[index] == wnid and names.name(index) == name
    assert names.synonyms[1] == ("goldfish", "Carassius auratus")


@pytest.mark.parametrize(
    "query, label",
    [
        ("golden retriever", 207),
        ("Golden_Retriever", 207),
        ("  golden   retriever ", 207),
        ("tennis-ball", 852),
        ("Carassius auratus", 1),  # a synonym
        ("Shih Tzu", 155),  # "Shih-Tzu"
        ("jack o lantern", 607),  # "jack-o'-lantern"
        ("partridge", 86),  # main name of 86, synonym of 82: the main name wins
        (88, 88),
        ("88", 88),
    ],
)
def test_resolve_imagenet(query, label):
    assert resolve_class(query) == label


def test_typo_suggests_the_closest_names():
    with pytest.raises(
        UserError, match=r"unknown class 'golden retreiver'; did you mean: golden retriever \(207\)"
    ):
        resolve_class("golden retreiver")
    with pytest.raises(UserError) as err:
        resolve_class("retriever")  # a word of several names: those come first
    assert all(f"({i})" in str(err.value) for i in (205, 206, 207, 208, 209))


def test_unknown_without_close_names_and_bad_indices():
    with pytest.raises(UserError, match="give an index 0..999"):
        resolve_class("qqqqzzzz")
    for bad in (1000, -1, "1000"):
        with pytest.raises(UserError, match="out of range"):
            resolve_class(bad)
    with pytest.raises(UserError):
        resolve_class(True)


def test_ambiguous_names_list_the_candidates():
    with pytest.raises(UserError, match=r"ambiguous: crane \(134\), crane \(517\)"):
        resolve_class("crane")
    with pytest.raises(UserError, match=r"lesser panda \(387\), giant panda \(388\)"):
        resolve_class("panda")


def test_custom_class_names_from_list_and_map():
    names = ClassNames.from_names(["T-shirt", "trouser", "ankle boot, boot"])
    assert names.resolve("t shirt") == 0 and names.resolve("BOOT") == 2 and names.resolve(1) == 1
    with pytest.raises(UserError, match=r"did you mean: trouser \(1\)"):
        names.resolve("trousers")
    with pytest.raises(UserError, match="0..2"):
        names.resolve(3)
    mapped = ClassNames.from_names({"cat": 1, "dog": 0})
    assert mapped.resolve("cat") == 1 and mapped.name(0) == "dog"
    with pytest.raises(UserError):
        ClassNames.from_names({"cat": 0, "dog": 2})
    assert resolve_class("dog", ["cat", "dog"]) == 1


def test_normalize_and_search():
    assert normalize_name(" Jack-o'-Lantern ") == "jack o lantern"
    assert ClassNames.imagenet().search("retriever") == [205, 206, 207, 208, 209]


def test_cli_lists_classes(capsys):
    assert main(["sample", "--list-classes", "tennis"]) == 0
    assert capsys.readouterr().out.split() == ["852", "tennis", "ball"]


def test_a_unique_word_start_finds_the_class():
    """Issue 16 item 7: "t-shirt" and "boot" find Fashion-MNIST's "T-shirt/top" and "Ankle boot"."""
    from ditkit.data.fashion_mnist import FASHION_MNIST_CLASSES

    names = ClassNames.from_names(list(FASHION_MNIST_CLASSES))
    assert names.resolve("t-shirt") == 0 and names.resolve("T-shirt") == 0 and names.resolve("top") == 0
    assert names.resolve("boot") == 9 and names.resolve("sneak") == 7 and names.resolve("shirt") == 6
    with pytest.raises(
        UserError, match="ambiguous: T-shirt/top \\(0\\), Sandal \\(5\\), Shirt \\(6\\), Sneaker \\(7\\)"
    ):
        names.resolve("s")
    with pytest.raises(UserError, match="unknown class 'hat'"):
        names.resolve("hat")
