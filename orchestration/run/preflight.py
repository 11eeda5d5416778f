"""Before any work: every problem `run` and `emosweep check` can find (the file, the corpus, storage, the
cache's room), then the features extracted once for the whole sweep."""
from __future__ import annotations

from orchestration.config.checks import cost_warnings, validate
from orchestration.config.record import STORAGE_ACCESS, recorded_change
from orchestration.config.sweep_file import SweepError
from orchestration.store import storage

from typing import TYPE_CHECKING

if TYPE_CHECKING:   # annotations only
    from orchestration.config.sweep_file import Sweep
    from orchestration.run.task import FeaturePlan
    from orchestration.run.task import Task
    from ser_models.data.corpus import Corpus


def prepare_features(sweep: Sweep, corpus: Corpus) -> Task:
    """Fill the feature cache once, in the driver, before any trial starts; the Task goes to every node."""
    from orchestration.run.task import prepare_task
    from ser_models.data.folds import fold_warnings
    from ser_models.registry import model_inputs

    inputs = sorted({i for model, ablation in sweep.cells for i in model_inputs(model, ablation)})
    engine = "ray" if sweep.resources["extract"] == "cluster" else "threads"
    task = prepare_task(sweep.corpus, sweep.folds, inputs, sweep.cache, sweep.vectors, progress=True,
                        test_corpora=sweep.test_corpora, engine=engine, encoder=sweep.encoder)
    if task.report.nodes:
        print(f"[sweep] features extracted on {len(task.report.nodes)} node(s) with Ray Data"
              + (f", {len(task.report.gpus)} GPU actor(s)" if task.report.gpus else ""))
    print(f"[sweep] corpus {corpus.name}: {len(task.table)} usable utterances in {len(task.folds)} speaker-disjoint "
          f"folds, classes {task.classes}; features {sorted(task.report.stores)} ready"
          + (f", {task.oov_words} words without vectors" if task.vocab else ""))
    if corpus.outside:
        print(f"[sweep] left out of the task's classes: {corpus.outside}")
    for name, frame in task.cross.items():
        print(f"[sweep] cross-corpus test set {name}: {len(frame)} utterances, {frame['speaker'].nunique()} "
              f"speakers, classes {dict(sorted(frame['label'].value_counts().items()))}")
    for line in fold_warnings(task.table, task.folds) + cost_warnings(sweep):
        print(f"[sweep] warning: {line}")
    return task


def check_storage(sweep: Sweep, root: str, probe: bool = True) -> None:
    """probe: write and delete a file there (run); else only look (check, which must leave nothing behind)."""
    try:
        (storage.check_writable if probe else storage.check_could_write)(root)
    except OSError as err:
        raise SweepError(f"{sweep.source}: storage {root} is not writable: {err}. Fix: point storage (or --storage) "
                         f"at a folder you can write, or an existing bucket; {STORAGE_ACCESS}") from None


def preflight(sweep: Sweep, probe: bool = True) -> tuple[Corpus, str, str | None, FeaturePlan]:
    """Every problem `run` can find before any work, for `run` and for `emosweep check` (probe=False: it only
    looks at storage). Returns the corpus, the storage root, what changed since the last run (if anything) and
    the features' plan (their bytes, which are cached)."""
    from orchestration.run.task import corpus_from_config, cross_tables, feature_plan
    from ser_models.data.corpus import CorpusError
    from ser_models.registry import model_inputs

    validate(sweep)
    root = storage.normalize(sweep.storage)
    check_storage(sweep, root, probe)
    try:
        corpus = corpus_from_config(sweep.corpus)
    except (FileNotFoundError, ValueError) as err:
        raise SweepError(f"{sweep.source}: cannot load corpus: {err}") from None
    validate(sweep, corpus)
    try:
        cross = cross_tables(corpus, sweep.test_corpora)
    except (FileNotFoundError, CorpusError) as err:   # a test corpus that cannot be read or mapped
        raise SweepError(f"{sweep.source}: {err}") from None
    plan = feature_plan(corpus, cross, {i for cell in sweep.cells for i in model_inputs(*cell)}, sweep.cache,
                        sweep.encoder)
    check_cache_room(sweep, plan)
    return corpus, root, recorded_change(sweep, storage.join(root, sweep.name)), plan


def check_cache_room(sweep: Sweep, plan: FeaturePlan) -> None:
    """Refuse before extraction starts when the cache's disk cannot hold what extraction will write, or (a cache
    in a bucket) this node's disk cannot hold its copy of the shards."""
    from ser_models.data.shards import NODE_CACHE
    from ser_models.data.sizing import free_bytes, human

    if storage.is_remote(plan.cache_dir):
        need, folder, what = sum(plan.sizes.values()), str(NODE_CACHE), "this node's copy of the shards"
        where = f"{folder} (EMOSWEEP_NODE_CACHE)"
        fix = f"set EMOSWEEP_NODE_CACHE to a folder on a disk with {human(need * 1.1)} free on every node"
    else:
        need, folder, what = plan.to_extract, plan.cache_dir, "the features to extract"
        where = f"the cache {folder}"
        fix = f"point cache: (or EMOSWEEP_CACHE) at a disk with {human(need * 1.1)} free"
    free = free_bytes(folder)
    if need > 0.95 * free:
        each = ", ".join(f"{name} {human(size)}" for name, size in plan.sizes.items() if name not in plan.cached)
        raise SweepError(f"{sweep.source}: {what} ({each}; {human(need)} in all) do not fit in {where}: "
                         f"{human(free)} free there. Fix: {fix}")
