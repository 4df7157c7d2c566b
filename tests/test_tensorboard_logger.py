"""The TensorBoard backend, read back with TensorBoard's own event reader and compared with metrics.csv."""
import math

import pandas as pd
import pytest

pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed: pip install -e '.[tensorboard]'")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from test_report import train_run  # noqa: E402
from tracking import CSVLogger, MultiLogger  # noqa: E402
from tracking.tensorboard_logger import TensorBoardLogger  # noqa: E402


def test_scalars_images_text_and_hparams(tmp_path, tiny_cola, tiny_tokenizer):
    run = train_run(tmp_path / "run", tiny_cola, tiny_tokenizer, 1e-3,
                    make_logger=lambda run_dir: MultiLogger([CSVLogger(run_dir), TensorBoardLogger(run_dir)]))
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()

    frame = pd.read_csv(run / "metrics.csv")
    metrics = [c for c in frame.columns if c not in ("epoch", "step")]
    assert set(metrics) <= set(tags["scalars"])
    for name in metrics:
        expected = [(int(r["step"]), r[name]) for _, r in frame.iterrows() if not math.isnan(r[name])]
        got = [(e.step, e.value) for e in acc.Scalars(name)]
        assert [s for s, _ in got] == [s for s, _ in expected], name
        assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-6), name  # float32 on disk

    assert {"Confusion Matrix", "roc", "pr"} <= set(tags["images"])
    assert len(acc.Images("Confusion Matrix")) == 2
    text_tags = [t for t in tags["tensors"] if t.endswith("text_summary")]
    assert {"examples/text_summary", "Confusion Matrix/text_summary", "roc/text_summary"} <= set(text_tags)
    examples = acc.Tensors("examples/text_summary")[-1].tensor_proto.string_val[0].decode()
    last = pd.read_csv(run / "tables" / f"examples-step{int(frame['step'].max())}.csv")
    assert all(sentence in examples for sentence in last["Sentence"])

    # The HParams view, as TensorBoard's hparams plugin builds it: the run's hyperparameters, and as metrics every
    # scalar the run logged (the backend names none).
    experiment = hparams_experiment(str(run / "tensorboard"))
    assert {"batch_size", "lr"} <= {info.name for info in experiment.hparam_infos}
    assert {info.name.tag for info in experiment.metric_infos} == {*metrics, "epoch"}


def hparams_experiment(logdir):
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import backend_context

    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(logdir)
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, logdir)
    backend = backend_context.Context(base_plugin.TBContext(logdir=logdir, multiplexer=multiplexer,
                                                            data_provider=provider))
    ctx = context.RequestContext()
    return backend.experiment_from_metadata(ctx, "", True, backend.hparams_metadata(ctx, ""),
                                            backend.hparams_from_data_provider(ctx, "", 0))
