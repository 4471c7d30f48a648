"""dhf.batches: the batch rules that the samplers, dhf-train, its dry run and dhf.train
share, against the rules written out here (README's "Batches")."""
import pytest

from dhf.batches import BatchSizes
from dhf.config import defaults
from dhf.errors import ConfigError


def hf(**keys) -> dict:
    return {**defaults()["optimizer"], **keys}


def test_rows_needed_count_the_searched_batches_only_when_held_out():
    held = BatchSizes.of(hf(gradient_batch=500, backtrack_batch=100, linesearch_batch=50))
    inside = BatchSizes.of(hf(gradient_batch=500, curvature_batch=200, backtrack_batch=100,
                              linesearch_batch=50, held_out=False))
    assert (held.rows_needed, held.inside_gradient) == (500 + 100 + 50, 1000)
    assert (inside.rows_needed, inside.inside_gradient) == (500, 200 + 100 + 50)


@pytest.mark.parametrize("keys, n_train, fresh, refused", [
    ({}, 6000, False, None),                                  # 5 000 + 1 000 rows
    ({}, 5999, False, "gradient_batch + backtrack_batch + linesearch_batch = 6000"),
    ({}, None, True, None),                                   # fresh rows: any number
    ({"held_out": False}, 5000, False, None),
    ({"held_out": False, "curvature_batch": 4500}, 5000, False,
     "curvature_batch + backtrack_batch + linesearch_batch = 5500"),
    ({"gradient_batch": 0, "curvature_batch": 300}, 300, False, None),  # every row
    ({"gradient_batch": 0, "curvature_batch": 301}, 300, False, "curvature_batch = 301"),
    ({"name": "sgd", "sgd_batch": 300}, 300, False, None),
    ({"name": "adam", "sgd_batch": 301}, 300, False, "sgd_batch = 301"),
])
def test_check_refuses_exactly_the_batches_that_do_not_fit(keys, n_train, fresh, refused):
    batches = BatchSizes.of(hf(**keys))
    if refused is None:
        batches.check(n_train, fresh)
    else:
        with pytest.raises(ConfigError, match=refused.replace("+", r"\+")):
            batches.check(n_train, fresh)


def test_fitted_shrinks_only_the_defaults_to_a_small_data_set():
    fit = BatchSizes.hf(hf()).fitted(1000, given=set())
    # backtracking on a fifth of the rows, the gradient on the rest, the curvature within
    assert (fit.gradient, fit.curvature, fit.backtrack) == (800, 800, 200)
    assert fit.rows_needed == 1000
    kept = BatchSizes.hf(hf(curvature_batch=100)).fitted(1000, given={"curvature_batch"})
    assert (kept.gradient, kept.curvature, kept.backtrack) == (800, 100, 200)
    enough = BatchSizes.hf(hf()).fitted(10_000, given=set())
    assert enough == BatchSizes.hf(hf())


def test_compiled_rows_name_every_batch_size_a_function_sees():
    assert BatchSizes.of(hf()).compiled_rows(9000, 700, train_error=True) == {
        "loss": [700, 9000, 1000], "grad": [5000], "curvature": [1000]}
    assert BatchSizes.of(hf(gradient_batch=0)).compiled_rows(9000, 700, False) == {
        "loss": [700, 9000], "grad": [9000], "curvature": [1000]}
    assert BatchSizes.of(hf(name="sgd")).compiled_rows(9000, 700, False) == {
        "loss": [700], "grad": [100], "curvature": []}


@pytest.mark.parametrize("keys, fresh, refused", [
    ({}, False, None),
    ({"gradient_batch": 0}, True, "gradient_batch = 0 trains on every row"),
    ({"gradient_batch": 0, "curvature_batch": 9000}, False, None),  # only vs the data
    ({"gradient_batch": 500, "curvature_batch": 501}, False, "curvature_batch = 501"),
    ({"name": "sgd", "gradient_batch": 0}, True, None),  # SGD's batch is sgd_batch
])
def test_batches_that_contradict_each_other_are_refused_before_any_data(keys, fresh,
                                                                        refused):
    batches = BatchSizes.of(hf(**keys))
    if refused is None:
        batches.check_consistent(fresh)
    else:
        with pytest.raises(ConfigError, match=refused):
            batches.check_consistent(fresh)
