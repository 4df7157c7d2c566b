"""data/datamodule.py, cache.py, sampling.py: tokenized, cached, length-grouped batches."""
import torch

from data import TextClassificationDataModule


def test_batches_are_padded_per_batch_and_keep_the_row_index(tiny_cola, tiny_tokenizer):
    dm = TextClassificationDataModule(tiny_tokenizer, data_dir=str(tiny_cola), batch_size=8, eval_batch_size=6, seed=3).setup()
    lengths = [len(tiny_tokenizer(s)["input_ids"]) for s in dm.sentences["train"]]
    seen = []
    for batch in dm.train_dataloader():
        assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels", "idx"}
        idx = batch["idx"].tolist()
        assert batch["input_ids"].shape[1] == max(lengths[i] for i in idx)  # padded to the batch, not to 128
        assert batch["attention_mask"].sum(1).tolist() == [lengths[i] for i in idx]
        assert batch["labels"].tolist() == [dm.labels["train"][i] for i in idx]
        seen += idx
    assert sorted(seen) == list(range(48))  # every sample once per epoch

    val_idx = torch.cat([b["idx"] for b in dm.val_dataloader()]).tolist()
    val_lengths = [len(tiny_tokenizer(dm.sentences["validation"][i])["input_ids"]) for i in val_idx]
    assert sorted(val_idx) == list(range(20)) and val_lengths == sorted(val_lengths)


def test_training_order_is_seeded(tiny_cola, tiny_tokenizer):
    def order(seed):
        dm = TextClassificationDataModule(tiny_tokenizer, data_dir=str(tiny_cola), batch_size=8, seed=seed).setup()
        loader = dm.train_dataloader()
        return [torch.cat([b["idx"] for b in loader]).tolist() for _ in range(2)]

    first = order(1)
    assert first == order(1)
    assert first[0] != first[1]  # a new order each epoch
    assert first != order(2)


def test_length_grouped_batches_pad_little_and_come_in_random_order():
    import random

    from data.sampling import LengthGroupedBatchSampler

    rng = random.Random(0)
    lengths = [rng.randint(3, 40) for _ in range(3200)]
    sampler = LengthGroupedBatchSampler(lengths, batch_size=16, seed=5)
    first, second = list(sampler), list(sampler)  # two epochs
    for epoch in (first, second):
        assert sorted(i for batch in epoch for i in batch) == list(range(3200))
        assert len(epoch) == len(sampler) == 200
    assert first != second
    assert LengthGroupedBatchSampler(lengths, 16, seed=5).batches(1) == second  # a function of (seed, epoch)

    def padding(batches):
        return sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in batches)

    shuffled = list(range(3200))
    rng.shuffle(shuffled)
    assert padding(first) < 0.1 * padding([shuffled[i:i + 16] for i in range(0, 3200, 16)])
    # neighbouring batches are not a long-to-short run (transformers' LengthGroupedSampler: ~every pair decreases)
    means = [sum(lengths[i] for i in b) / len(b) for b in first]
    decreasing = sum(a > b for a, b in zip(means, means[1:])) / (len(means) - 1)
    assert 0.3 < decreasing < 0.7


def test_batches_split_so_every_process_gets_whole_batches():
    from data.sampling import LengthGroupedBatchSampler

    lengths = list(range(3, 51))  # 48 samples
    for processes in (1, 2, 3, 4):
        sampler = LengthGroupedBatchSampler(lengths, batch_size=7, seed=1, num_processes=processes)
        batches = list(sampler)
        assert len(batches) == len(sampler) and len(batches) % processes == 0
        assert sorted(i for b in batches for i in b) == list(range(48))  # each sample once, none repeated
        assert max(len(b) for b in batches) <= 7


def _tokenized(dm):
    return {split: ds.to_dict() for split, ds in dm.splits.items()}


def test_tokenization_is_cached_across_runs_by_content(tmp_path, tiny_cola, tiny_tokenizer, monkeypatch):
    cache = tmp_path / "cache"
    fresh = _tokenized(TextClassificationDataModule(tiny_tokenizer, data_dir=str(tiny_cola), cache_dir=None).setup())
    first = TextClassificationDataModule(tiny_tokenizer, data_dir=str(tiny_cola), cache_dir=str(cache)).setup()
    assert _tokenized(first) == fresh
    entries = sorted(p.name for p in (cache / "tokenized").iterdir())
    assert len(entries) == 2  # train and validation

    calls = []
    monkeypatch.setattr(TextClassificationDataModule, "_tokenize", lambda self, batch: calls.append(1))
    second = TextClassificationDataModule(tiny_tokenizer, data_dir=str(tiny_cola), cache_dir=str(cache)).setup()
    assert calls == [] and _tokenized(second) == fresh  # read back, not tokenized again
    monkeypatch.undo()

    # Another sentence in the file, another max_length, or another tokenizer: new entries, never a stale one.
    changed = tmp_path / "changed"
    changed.mkdir()
    (changed / "dev.tsv").write_bytes((tiny_cola / "dev.tsv").read_bytes())
    lines = (tiny_cola / "train.tsv").read_text().splitlines(keepends=True)
    (changed / "train.tsv").write_text("".join(lines[:-1]) + "tiny\t1\t\tThe dog saw mary.\n")
    edited = TextClassificationDataModule(tiny_tokenizer, data_dir=str(changed), cache_dir=str(cache)).setup()
    assert edited.splits["train"][-1]["input_ids"] == tiny_tokenizer("The dog saw mary.")["input_ids"]
    shorter = TextClassificationDataModule(tiny_tokenizer, data_dir=str(tiny_cola), cache_dir=str(cache), max_length=4).setup()
    assert max(len(ids) for ids in shorter.splits["train"]["input_ids"]) == 4
    assert len(list((cache / "tokenized").iterdir())) == 2 + 1 + 2  # the unchanged dev.tsv reuses its entry


def test_a_broken_or_unwritable_cache_costs_only_time(tmp_path, tiny_cola, tiny_tokenizer, caplog):
    fresh = _tokenized(TextClassificationDataModule(tiny_tokenizer, data_dir=str(tiny_cola), cache_dir=None).setup())
    cache = tmp_path / "cache"
    TextClassificationDataModule(tiny_tokenizer, data_dir=str(tiny_cola), cache_dir=str(cache)).setup()
    for entry in (cache / "tokenized").iterdir():
        for f in entry.iterdir():
            f.write_bytes(b"garbage")
    assert _tokenized(TextClassificationDataModule(tiny_tokenizer, data_dir=str(tiny_cola), cache_dir=str(cache)).setup()) == fresh
    assert "cannot read" in caplog.text
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    caplog.clear()
    assert _tokenized(TextClassificationDataModule(tiny_tokenizer, data_dir=str(tiny_cola), cache_dir=str(blocker)).setup()) == fresh
    assert "cannot write" in caplog.text and "TEXT_CLASSIFIER_CACHE" in caplog.text


def test_the_default_cache_follows_the_environment(tmp_path, monkeypatch):
    from data.cache import default_cache_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("TEXT_CLASSIFIER_CACHE", raising=False)
    assert default_cache_dir() == str(tmp_path / "xdg" / "text-classifier-monitor")
    monkeypatch.setenv("TEXT_CLASSIFIER_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir() == str(tmp_path / "mine")


def test_loader_settings_for_a_cpu_machine(tiny_cola, tiny_tokenizer):
    from data.datamodule import default_num_workers

    gpu = torch.cuda.is_available()
    assert default_num_workers() == 0
    dm = TextClassificationDataModule(tiny_tokenizer, data_dir=str(tiny_cola), cache_dir=None).setup()
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        assert loader.num_workers == default_num_workers() and loader.pin_memory == gpu
    dm.num_workers = 1
    batches = [b["idx"].tolist() for b in dm.val_dataloader()]
    dm.num_workers = 0
    assert batches == [b["idx"].tolist() for b in dm.val_dataloader()]  # a worker process yields the same batches
