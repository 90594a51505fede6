from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from fewshot.data.dataset import FashionProducts
from fewshot.data.protocols import EpisodicProtocol, TransferProtocol, class_list
from fewshot.utils.errors import UserError

REAL_HEAD = ["Tshirts", "Watches", "Casual Shoes", "Kurtas", "Shirts", "Tops", "Sunglasses", "Handbags",
             "Sports Shoes", "Heels", "Briefs", "Wallets", "Flip Flops", "Socks", "Belts", "Sandals", "Sarees",
             "Dresses", "Formal Shoes", "Flats"]


def _styles(spec: dict[str, tuple[int, int]], no_year: dict[str, int] | None = None) -> pd.DataFrame:
    """A products table: class -> (n even-year rows, n odd-year rows), plus rows without a year."""
    articles, years = [], []
    for name, (n_even, n_odd) in spec.items():
        articles += [name] * (n_even + n_odd)
        years += [2012] * n_even + [2011] * n_odd
    for name, n in (no_year or {}).items():
        articles += [name] * n
        years += [None] * n
    order = np.random.default_rng(0).permutation(len(articles))  # protocols must not rely on row order
    return pd.DataFrame({"articleType": np.array(articles, dtype=object)[order],
                         "year": pd.array(np.array(years, dtype=object)[order], dtype="Int64")})


def _reference_transfer(styles: pd.DataFrame, n_head: int, min_train: int) -> dict[str, object]:
    """A plain-Python reading of the rules, to compare the vectorised protocol against."""
    train, test = Counter(), Counter()
    for a, y in zip(styles["articleType"], styles["year"]):
        if pd.isna(y):
            continue
        (train if int(y) % 2 == 0 else test)[a] += 1
    ranked = sorted(train, key=lambda c: (-train[c], c))
    head = ranked[:n_head]
    tail = sorted(c for c in ranked[n_head:] if train[c] >= min_train)
    return {"head": head, "tail": tail,
            "n_head_train": sum(train[c] for c in head), "n_head_test": sum(test[c] for c in head),
            "n_tail_train": sum(train[c] for c in tail), "n_tail_test": sum(test[c] for c in tail),
            "test_only": sorted(c for c in test if train[c] == 0)}


def test_transfer_splits_even_and_odd_years_and_ranks_head_with_ties_by_name():
    styles = _styles({"B": (5, 1), "A": (5, 2), "C": (7, 0), "D": (2, 3), "E": (0, 4), "F": (1, 0)},
                     no_year={"A": 2})
    p = TransferProtocol.from_styles(styles, n_head=3)
    assert p.head == ("C", "A", "B")  # C has most; A and B tie at 5 and go by name
    assert p.tail == ("D", "F")
    assert "only in test" in p.excluded["E"] and set(p.excluded) == {"E"}
    assert (len(p.head_train), len(p.head_test), len(p.tail_train), len(p.tail_test)) == (17, 3, 3, 3)
    assert len(p.no_year) == 2 and styles["year"].iloc[p.no_year].isna().all()
    assert (styles["year"].iloc[p.head_train] % 2 == 0).all() and (styles["year"].iloc[p.tail_test] % 2 == 1).all()
    assert p.targets(p.head_train, "head").tolist() == [p.head.index(a) for a in styles["articleType"].iloc[p.head_train]]


def test_transfer_min_train_excludes_small_tail_classes_with_reason():
    p = TransferProtocol.from_styles(_styles({"A": (9, 1), "B": (3, 1), "C": (1, 5)}), n_head=1, min_train=2)
    assert p.tail == ("B",)
    assert "fewer than min_train=2" in p.excluded["C"]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("n_head", "min_train"), [(3, 1), (5, 2), (1, 4)])
def test_transfer_matches_reference_on_random_tables(seed, n_head, min_train):
    rng = np.random.default_rng(seed)
    spec = {f"class{i:02d}": (int(rng.integers(0, 30)), int(rng.integers(0, 30))) for i in range(12)}
    spec["class00"] = (40, 3)
    styles = _styles(spec, no_year={"class01": 3})
    p = TransferProtocol.from_styles(styles, n_head=n_head, min_train=min_train)
    ref = _reference_transfer(styles, n_head, min_train)
    totals = p.totals()
    assert list(p.head) == ref["head"] and list(p.tail) == ref["tail"]
    for key in ("n_head_train", "n_head_test", "n_tail_train", "n_tail_test"):
        assert totals[key] == ref[key], key
    assert sorted(c for c, why in p.excluded.items() if "only in test" in why) == ref["test_only"]
    everything = np.concatenate([p.head_train, p.head_test, p.tail_train, p.tail_test])
    assert len(np.unique(everything)) == len(everything)  # no row in two groups


def test_transfer_raises_when_fewer_classes_than_n_head():
    with pytest.raises(ValueError, match="only 2 classes have train.*lower n_head"):
        TransferProtocol.from_styles(_styles({"A": (3, 1), "B": (2, 1)}), n_head=3)


def test_transfer_summary_lists_every_class_once_with_its_role():
    p = TransferProtocol.from_styles(_styles({"A": (9, 1), "B": (3, 1), "E": (0, 4)}), n_head=1)
    table = p.summary()
    assert table["class"].tolist() == ["A", "B", "E"]
    assert table["role"].tolist() == ["head", "tail", "excluded"]
    assert table.loc[2, "reason"].startswith("only in test") and table.loc[2, "n_test"] == 4


def test_protocol_objects_are_frozen():
    p = TransferProtocol.from_styles(_styles({"A": (3, 1), "B": (2, 1)}), n_head=1)
    with pytest.raises(AttributeError):
        p.head = ("B",)
    with pytest.raises(ValueError):
        p.head_train[0] = 5


def test_shipped_class_lists_have_60_background_and_47_evaluation_classes():
    background, evaluation = class_list("background"), class_list("evaluation")
    assert len(background) == len(set(background)) == 60
    assert len(evaluation) == len(set(evaluation)) == 47
    assert not set(background) & set(evaluation)
    assert background[:3] == ("Cufflinks", "Rompers", "Laptop Bag") and evaluation[-1] == "Travel Accessory"


def test_episodic_keeps_listed_classes_with_enough_images_and_reports_the_rest():
    styles = _styles({"Jeans": (15, 10), "Bracelet": (3, 2), "Cufflinks": (20, 0), "Rompers": (0, 19),
                      "Not A Listed Type": (30, 30)})
    p = EpisodicProtocol.from_styles(styles)
    assert p.background == ("Cufflinks",) and p.evaluation == ("Jeans",)
    assert "fewer than min_images=20" in p.excluded["Bracelet"] and "19 images" in p.excluded["Rompers"]
    assert "neither" in p.excluded["Not A Listed Type"]
    assert p.excluded["Laptop Bag"] == "background class absent from the data (0 images)"
    assert len(p.background_idx) == 20 and len(p.evaluation_idx) == 25
    assert set(styles["articleType"].iloc[p.evaluation_idx]) == {"Jeans"}
    table = p.summary().set_index("class")
    assert table.loc["Jeans", "role"] == "evaluation" and table.loc["Bracelet", "role"] == "excluded"


def test_episodic_rejects_overlapping_lists():
    with pytest.raises(ValueError, match="both background and evaluation"):
        EpisodicProtocol.from_styles(_styles({"A": (20, 0)}), background=("A",), evaluation=("A", "B"))


@pytest.mark.realdata
def test_real_transfer_protocol_counts(real_data):
    ds = FashionProducts(real_data, warn=False)
    assert (ds.n_rows, len(ds), len(ds.missing)) == (44_446, 44_072, 374)
    p = TransferProtocol.from_styles(ds.styles)
    assert list(p.head) == REAL_HEAD
    assert (len(p.head_train), len(p.head_test)) == (18_548, 14_004)
    assert len(p.tail) == 86 and len(p.tail_train) == 5_207
    assert p.totals()["n_tail_with_test"] == 67 and len(p.tail_test) == 4_138
    assert len(p.head_train) + len(p.tail_train) == 23_755  # every train image is head or tail
    assert all("only in test" in why for why in p.excluded.values())


@pytest.mark.realdata
def test_real_episodic_protocol_keeps_classes_with_at_least_20_images(real_data):
    ds = FashionProducts(real_data, warn=False)
    p = EpisodicProtocol.from_styles(ds.styles)
    counts = ds.styles["articleType"].value_counts()
    assert all(counts[c] >= 20 for c in p.background + p.evaluation)
    listed = set(class_list("background")) | set(class_list("evaluation"))
    dropped = {c for c in listed if counts.get(c, 0) < 20}
    assert dropped == {c for c, why in p.excluded.items() if "min_images" in why}
    assert len(p.background) + len(dropped & set(class_list("background"))) == 60


# --- duplicate groups -------------------------------------------------------------------------------


def _copies(styles: pd.DataFrame, pairs: list[tuple[int, int]]) -> np.ndarray:
    """Groups [len(styles)] where each pair of rows is a group of copies."""
    groups = np.full(len(styles), -1, dtype=np.int64)
    for number, (a, b) in enumerate(pairs):
        groups[[a, b]] = number
    return groups


def _rows(styles: pd.DataFrame, article: str, even: bool) -> list[int]:
    year = styles["year"].to_numpy()
    return [i for i in range(len(styles)) if styles["articleType"].iloc[i] == article
            and not pd.isna(year[i]) and (int(year[i]) % 2 == 0) == even]


def test_transfer_with_groups_drops_test_copies_of_train_images_only():
    styles = _styles({"A": (9, 4), "B": (3, 3), "C": (2, 2)}, no_year={"A": 1})
    a_train, a_test = _rows(styles, "A", True), _rows(styles, "A", False)
    b_train, b_test = _rows(styles, "B", True), _rows(styles, "B", False)
    c_test = _rows(styles, "C", False)
    no_year = int(np.flatnonzero(styles["year"].isna())[0])
    groups = _copies(styles, [(a_train[0], a_test[0]),  # head test copy of a head train image: dropped
                              (b_train[0], c_test[0]),  # tail test copy of a train image of another class: dropped
                              (a_test[1], b_test[1]),  # both in test: kept
                              (a_train[1], b_train[1]),  # both in train: kept
                              (no_year, c_test[1])])  # copy without a year, in no split: kept
    plain = TransferProtocol.from_styles(styles, n_head=1)
    p = TransferProtocol.from_styles(styles, n_head=1, duplicate_groups=groups)
    assert (p.head, p.tail) == (plain.head, plain.tail) == (("A",), ("B", "C"))
    assert np.array_equal(p.head_train, plain.head_train) and np.array_equal(p.tail_train, plain.tail_train)
    assert sorted(p.dropped_test.tolist()) == sorted([a_test[0], c_test[0]])
    assert set(p.head_test) == set(plain.head_test) - {a_test[0]}
    assert set(p.tail_test) == set(plain.tail_test) - {c_test[0]}
    assert p.counts["n_test"].to_dict() == {"A": 3, "B": 3, "C": 1}
    assert p.counts["n_train"].equals(plain.counts["n_train"])
    totals = p.totals()
    assert (totals["n_dropped_test"], totals["n_head_test_dropped"], totals["n_tail_test_dropped"]) == (2, 1, 1)
    assert totals["n_head_test"] == 3 and totals["n_tail_test"] == 4
    assert p.deduplicated and not plain.deduplicated and len(plain.dropped_test) == 0
    assert "n_dropped_test" not in plain.totals()  # without groups: today's totals
    with pytest.raises(ValueError):
        p.dropped_test[0] = 1


def test_transfer_without_copies_across_the_split_equals_the_plain_protocol():
    styles = _styles({"A": (9, 4), "B": (3, 3)})
    p = TransferProtocol.from_styles(styles, n_head=1, duplicate_groups=np.full(len(styles), -1))
    plain = TransferProtocol.from_styles(styles, n_head=1)
    for name in ("head_train", "head_test", "tail_train", "tail_test"):
        assert np.array_equal(getattr(p, name), getattr(plain, name)), name
    assert p.counts.equals(plain.counts) and p.totals()["n_dropped_test"] == 0


def test_transfer_class_whose_test_images_are_all_dropped_keeps_its_row():
    styles = _styles({"A": (5, 0), "B": (3, 1)})
    groups = _copies(styles, [(_rows(styles, "A", True)[0], _rows(styles, "B", False)[0])])
    p = TransferProtocol.from_styles(styles, n_head=1, duplicate_groups=groups)
    assert p.counts.loc["B"].tolist() == [3, 0] and len(p.tail_test) == 0
    assert p.summary()["class"].tolist() == ["A", "B"]


def test_episodic_with_groups_keeps_one_image_per_group_before_counting():
    styles = _styles({"Jeans": (15, 6), "Cufflinks": (20, 3), "Rompers": (10, 10)})
    jeans = _rows(styles, "Jeans", True) + _rows(styles, "Jeans", False)
    cuff = _rows(styles, "Cufflinks", True) + _rows(styles, "Cufflinks", False)
    romp = _rows(styles, "Rompers", True) + _rows(styles, "Rompers", False)
    cuff_row = min(cuff)
    romp_row = min(r for r in romp if r > cuff_row)  # the later row of a group is the one dropped
    groups = _copies(styles, [(jeans[0], jeans[1]), (jeans[2], jeans[3]), (cuff_row, romp_row)])
    plain = EpisodicProtocol.from_styles(styles)
    p = EpisodicProtocol.from_styles(styles, duplicate_groups=groups)
    assert plain.evaluation == ("Jeans",) and plain.background == ("Cufflinks", "Rompers")
    assert p.evaluation == () and "19 images, fewer than min_images=20" in p.excluded["Jeans"]  # 21 - 2 copies
    assert p.background == ("Cufflinks",) and "19 images" in p.excluded["Rompers"]  # its copy of a cufflink
    dropped = [max(jeans[0], jeans[1]), max(jeans[2], jeans[3]), romp_row]
    assert sorted(p.dropped_duplicates.tolist()) == sorted(dropped)
    assert set(p.background_idx) == set(cuff)
    assert p.counts.to_dict() == {"Cufflinks": 23, "Rompers": 19, "Jeans": 19}
    totals = p.totals()
    # the dropped rows are of classes that are now excluded: none is counted against a role
    assert (totals["n_dropped_duplicates"], totals["n_background_dropped"], totals["n_evaluation_dropped"]) == (3, 0, 0)
    assert "n_dropped_duplicates" not in plain.totals()


def test_episodic_with_no_copies_equals_the_plain_protocol():
    styles = _styles({"Jeans": (15, 10), "Cufflinks": (20, 0), "Other": (5, 5)})
    p = EpisodicProtocol.from_styles(styles, duplicate_groups=np.full(len(styles), -1))
    plain = EpisodicProtocol.from_styles(styles)
    assert np.array_equal(p.background_idx, plain.background_idx)
    assert np.array_equal(p.evaluation_idx, plain.evaluation_idx)
    assert p.counts.equals(plain.counts) and dict(p.excluded) == dict(plain.excluded)


def test_episodic_class_whose_every_image_is_a_copy_keeps_a_row_with_0_images():
    styles = pd.DataFrame({"articleType": np.array(["Jeans"] * 25 + ["Bracelet", "Mystery"], dtype=object),
                           "year": pd.array([2012] * 27, dtype="Int64")})
    groups = np.full(27, -1, dtype=np.int64)
    groups[[0, 25, 26]] = 0  # the bracelet and the unlisted class's image are copies of the first jeans
    p = EpisodicProtocol.from_styles(styles, duplicate_groups=groups)
    assert p.counts.to_dict() == {"Jeans": 25, "Bracelet": 0, "Mystery": 0}
    assert p.summary().set_index("class").loc[["Bracelet", "Mystery"], "n_images"].tolist() == [0, 0]
    assert p.excluded["Bracelet"] == "evaluation class with 0 images, fewer than min_images=20"
    assert p.excluded["Mystery"] == "in neither the background nor the evaluation list"
    assert p.evaluation == ("Jeans",) and len(p.evaluation_idx) == 25
    assert p.totals()["n_evaluation_dropped"] == 0  # the dropped rows are of excluded classes


# --- split rules as data: the same protocols from a rule, on any table ---------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_transfer_from_the_kaggle_rule_on_any_table_equals_from_styles(seed):
    from fewshot.data.rules import KAGGLE_SPLIT

    rng = np.random.default_rng(seed)
    spec = {f"class{i:02d}": (int(rng.integers(0, 30)), int(rng.integers(0, 30))) for i in range(12)}
    spec["class00"] = (40, 3)
    styles = _styles(spec, no_year={"class01": 3, "only_no_year": 2})
    groups = np.full(len(styles), -1)
    groups[:4] = 0  # some pixel copies, across splits
    today = TransferProtocol.from_styles(styles, n_head=3, duplicate_groups=groups)
    # the same rule on the year as strings (a manifest column), through the generic entry point
    as_text = styles.assign(year=styles["year"].astype("string"))
    p = TransferProtocol.from_assignment(styles["articleType"].to_numpy(object), KAGGLE_SPLIT.assign(as_text),
                                         n_head=3, duplicate_groups=groups)
    assert (p.head, p.tail, dict(p.excluded)) == (today.head, today.tail, dict(today.excluded))
    for part in ("head_train", "head_test", "tail_train", "tail_test", "no_year", "dropped_test"):
        assert np.array_equal(getattr(p, part), getattr(today, part)), part
    assert today.excluded["only_no_year"] == "every image has no year"


def test_transfer_messages_name_the_rule_they_split_by():
    from fewshot.data.rules import SplitRule

    rule = SplitRule.on_column("split", ("train",), ("test",))
    articles = np.array(["A", "A", "B", "C"], dtype=object)
    p = TransferProtocol.from_assignment(articles, np.array([1, 2, 2, 0], dtype=np.int8), rule=rule, n_head=1)
    assert p.excluded == {"B": "only in test: 0 train, 1 test images",
                          "C": "every image's split is blank or neither a train nor a test value"}
    assert p.totals()["split_rule"] == "train = split 'train', test = split 'test'"
    with pytest.raises(ValueError, match="only 1 class has train images; n_head=2 takes 2 for the head"):
        TransferProtocol.from_assignment(articles, np.array([1, 2, 2, 0], dtype=np.int8), rule=rule, n_head=2)


def test_row_roles_give_every_row_its_split_and_its_role_in_each_protocol():
    from fewshot.data.protocols import row_roles

    styles = _styles({"A": (3, 2), "B": (2, 1), "E": (0, 2)}, no_year={"A": 1})
    groups = np.full(len(styles), -1)
    test_a = np.flatnonzero((styles["articleType"] == "A").to_numpy() & styles["year"].eq(2011).fillna(False).to_numpy(bool))
    train_a = np.flatnonzero((styles["articleType"] == "A").to_numpy() & styles["year"].eq(2012).fillna(False).to_numpy(bool))
    groups[[train_a[0], test_a[0]]] = 0  # a test picture whose copy is a train picture
    tp = TransferProtocol.from_styles(styles, n_head=1, duplicate_groups=groups)
    ep = EpisodicProtocol.from_styles(styles, min_images=1, background=("A",), evaluation=("B",),
                                      duplicate_groups=groups)
    roles = row_roles(len(styles), tp, ep)
    assert roles.loc[test_a[0], "transfer"] == "copy_of_train"
    assert roles.loc[max(train_a[0], test_a[0]), "episodic"] == "duplicate"  # episodic keeps a group's first row
    assert (roles.loc[tp.head_train, "split"] == "train").all() and (roles.loc[tp.tail_test, "transfer"] == "tail_test").all()
    assert roles.loc[tp.no_year, ["split", "transfer"]].values.tolist() == [["", "no_split"]]
    e_rows = np.flatnonzero((styles["articleType"] == "E").to_numpy())
    assert set(roles.loc[e_rows, "transfer"]) == {"excluded"} and set(roles.loc[e_rows, "episodic"]) == {"excluded"}
    assert row_roles(len(styles), None, ep)["transfer"].eq("").all()


def test_seeded_class_split_draws_among_classes_with_enough_images_only():
    from fewshot.data.rules import ClassSplit

    counts = pd.Series({f"c{i}": n for i, n in enumerate([50, 40, 30, 25, 21, 20, 19, 5, 1, 0])})
    split = ClassSplit.fraction(0.5, seed=7)
    background, evaluation = split.resolve(counts, min_images=20)
    assert sorted(background + evaluation) == ["c0", "c1", "c2", "c3", "c4", "c5"] and len(background) == 3
    assert split.resolve(counts, min_images=20) == (background, evaluation)  # a pure function of the seed
    draws = {ClassSplit.fraction(0.5, seed=s).resolve(counts, min_images=20) for s in range(6)}
    assert len(draws) > 1
    assert ClassSplit.fraction(0.9, 0).resolve(counts, min_images=20)[1] != ()  # evaluation keeps one class
    with pytest.raises(UserError, match="background_fraction=1.0 must lie in"):
        ClassSplit.fraction(1.0, 0)
