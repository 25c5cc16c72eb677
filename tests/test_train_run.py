"""Rollouts, behaviour log-probs, the trainer end to end on a tiny random model, resume after a kill,
torchrun with two processes, and the `entrodec train` command line."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from entrodec.decoding import EntropyTemperature, SamplerChain, Temperature, TopK, TopP
from entrodec.train import Trainer, config_from_dict, load_config, load_preset
from entrodec.train.checkpoint import read_metrics
from entrodec.train.logprobs import check_recomputable, forward_logits, processed_logprobs, token_logprobs
from entrodec.train.models import build_model
from entrodec.train.rollout import pack, roll_out
from entrodec.train.tasks import Arithmetic, DigitsFormat, Lowercase

REPO = Path(__file__).resolve().parents[1]
TIMING = ("elapsed_s", "rollout_s")


@pytest.fixture()
def tiny():
    """A fresh tiny random model each time (training changes its weights)."""
    return build_model("tiny-random", 0, torch.device("cpu"))


def tiny_config(**overrides):
    config = load_preset("tiny").to_dict()
    config.update(steps=2, checkpoint_every=1)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict) and key != "entropy_control":
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config_from_dict(config)


# ---------------------------------------------------------------- behaviour log-probs
@pytest.mark.parametrize("chain", [
    SamplerChain([Temperature(0.7), TopK(5)]),
    SamplerChain([TopP(0.9), Temperature(1.3)]),
    SamplerChain([EntropyTemperature(kind="edt", temperature=1.0, theta=0.5)]),
])
def test_recorded_behaviour_logprobs_are_the_processed_distribution(tiny, chain):
    """What the rollout records as log μ(a) is the processed distribution's log-prob of the sampled
    token, recomputed from a full forward; the model's own log-prob is recorded beside it."""
    model, tok = tiny
    task = Lowercase()
    rollouts = roll_out(model, tok, task, task.examples(0, 0, 2), chain, 3, 6, [11, 12])
    batch = pack(rollouts, tok.eos_token_id)
    with torch.no_grad():
        logits = forward_logits(model, batch.input_ids, batch.attention_mask, batch.first)
        raw = token_logprobs(logits, batch.targets)
        processed, support = processed_logprobs(logits, batch.targets, batch.mask, chain)
    assert bool(support[batch.mask].all())
    assert torch.allclose(processed[batch.mask], batch.behaviour_logp[batch.mask], atol=2e-4)
    assert torch.allclose(raw[batch.mask], batch.model_logp[batch.mask], atol=2e-4)
    if isinstance(chain.processors[-1], TopK):
        assert all(k == 5 for row in rollouts.kept for k in row)
        # truncation only raises a kept token's probability: μ(a) >= π(a)
        assert bool((batch.behaviour_logp[batch.mask] >= batch.model_logp[batch.mask] - 1e-5).all())


def test_processed_logprobs_carry_gradient_and_flag_tokens_outside_the_support():
    logits = torch.tensor([[[3.0, 2.0, 0.0, -1.0]]], requires_grad=True)
    mask = torch.tensor([[True]])
    chain = SamplerChain([Temperature(0.5), TopK(2)])
    inside, support = processed_logprobs(logits, torch.tensor([[1]]), mask, chain)
    expected = torch.log_softmax(torch.tensor([6.0, 4.0]), 0)[1]
    assert float(inside.detach()) == pytest.approx(float(expected), abs=1e-6) and bool(support)
    inside.sum().backward()
    assert logits.grad.abs().sum() > 0 and logits.grad[0, 0, 2:].abs().sum() == 0  # removed tokens get nothing
    outside, support = processed_logprobs(logits.detach(), torch.tensor([[3]]), mask, chain)
    assert not bool(support) and float(outside) == 0.0


def test_recompute_refuses_processors_with_state():
    with pytest.raises(ValueError, match=r"entry 0 \(EntropyTemperature with rolling windows\) is not"):
        check_recomputable(SamplerChain([EntropyTemperature(kind="hapo")]))
    fixed = EntropyTemperature(kind="hapo")
    fixed.set_statistics(torch.tensor([0.5, 1.0, 2.0]))
    check_recomputable(SamplerChain([fixed, TopK(3)]))

    class Custom:
        def __call__(self, input_ids, scores):
            return scores

    with pytest.raises(ValueError, match=r"entry 1 \(Custom\)"):
        check_recomputable(SamplerChain([Temperature(1.0), Custom()]))


def test_truncated_importance_weights(tiny, tmp_path):
    """min(π_old(a) / μ(a), C): below one on a truncated chain at T = 1 (μ renormalises π over the kept set)."""
    model, tok = tiny
    trainer = Trainer(tiny_config(sampler=[{"top_k": 3}]), tmp_path, model=model, tokenizer=tok, progress=False)
    rollouts = trainer._roll_out(0)
    batch = pack(rollouts, trainer.pad)
    weights = trainer._importance_weights(batch, batch.model_logp)
    expected = torch.exp(batch.model_logp - batch.behaviour_logp).clamp(max=2.0)
    assert torch.allclose(weights[batch.mask], expected[batch.mask])
    assert bool((weights[batch.mask] <= 1.0 + 1e-6).all()) and bool((weights[~batch.mask] == 1).all())


# ---------------------------------------------------------------- the trainer
KEYS = {"step", "reward_mean", "entropy_mean", "kept_mean", "clip_low", "clip_high", "loss", "grad_norm", "kl_ref",
        "is_weight_mean", "picked_tokens", "loss_token_fraction", "elapsed_s"}


def test_tiny_run_writes_metrics_plot_checkpoint_and_model(tiny, tmp_path):
    model, tok = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    history = Trainer(tiny_config(steps=3), tmp_path, model=model, tokenizer=tok, progress=False).run()
    assert [r["step"] for r in history] == [0, 1, 2]
    assert KEYS <= set(history[0])
    assert all(0.0 <= r["reward_mean"] <= 1.0 and r["entropy_mean"] > 5.0 for r in history)  # a random model is near-uniform
    assert read_metrics(tmp_path) == history
    for name in ("metrics.png", "checkpoint.pt", "config.yaml", "model/config.json"):
        assert (tmp_path / name).is_file(), name
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())  # it trained
    with pytest.raises(FileExistsError, match="already holds a run"):
        Trainer(tiny_config(), tmp_path, model=model, tokenizer=tok, progress=False).run()


@pytest.mark.parametrize("overrides, check", [
    ({"entropy_control": {"method": "none"}, "loss": {"aggregation": "sequence-mean"}}, lambda h: h[-1]["picked_tokens"] == 0),
    ({"entropy_control": {"method": "clip-cov", "fraction": 0.2, "lower": -100.0, "upper": 100.0}},
     lambda h: h[0]["picked_tokens"] >= 1),
    ({"entropy_control": {"method": "kl-cov", "fraction": 0.1}, "optim": {"epochs": 2}},
     lambda h: h[0]["picked_tokens"] >= 1 and h[0]["clip_low"] == 0 == h[0]["clip_high"]),
    ({"entropy_control": {"method": "forking-tokens", "rho": 0.2}},
     lambda h: 0.15 < h[0]["loss_token_fraction"] < 0.3),
    ({"entropy_control": {"method": "steer", "mode": "exp"}}, lambda h: True),
    ({"entropy_control": {"method": "entropy-bonus", "target": 20.0, "coef": 0.01, "delta": 0.01}},
     lambda h: h[0]["bonus_coef"] == pytest.approx(0.01) and h[1]["bonus_coef"] == pytest.approx(0.02)),
    ({"entropy_control": {"method": "target-entropy", "target": 20.0}, "rollout": {"prompts_per_step": 4}},
     lambda h: h[0]["auxiliary_rows"] == 4 and h[0]["auxiliary_temperature"] == 1.0 and h[1]["auxiliary_temperature"] == 1.2),
    # one update per rollout: the training forward sees exactly the processed distribution that sampled
    ({"behaviour": {"mode": "recompute"}, "sampler": [{"temperature": 0.8}, {"top_k": 50}], "optim": {"mini_batches": 1}},
     lambda h: h[0]["is_weight_mean"] == 1.0 and h[0]["outside_support"] == 0.0 and h[0]["ratio_deviation"] < 1e-4),
    ({"behaviour": {"mode": "ignore"}}, lambda h: h[0]["is_weight_mean"] == 1.0),
    ({"loss": {"kl_coef": 0.1}, "optim": {"grad_accum": 2, "mini_batches": 1}},
     lambda h: h[0]["kl_ref"] == pytest.approx(0.0, abs=1e-6) and h[1]["kl_ref"] > 0),
    ({"sampler": [{"entropy_temperature": {"kind": "hapo", "tau": 0.5}}, {"top_k": 100}]}, lambda h: h[1]["kept_mean"] == 100),
])
def test_every_control_and_option_trains(tiny, tmp_path, overrides, check):
    model, tok = tiny
    history = Trainer(tiny_config(**overrides), tmp_path, model=model, tokenizer=tok, progress=False).run()
    assert len(history) == 2
    for record in history:
        assert all(isinstance(v, (int, float)) and v == v for v in record.values()), record  # no NaN
    assert check(history), history


def test_kl_cov_on_policy_warns(tiny, tmp_path):
    model, tok = tiny
    with pytest.warns(UserWarning, match="KL-Cov cannot act"):
        Trainer(tiny_config(entropy_control={"method": "kl-cov"}, optim={"mini_batches": 1}), tmp_path,
                model=model, tokenizer=tok, progress=False)


def test_target_entropy_needs_two_prompts_before_loading_anything(tmp_path):
    config = tiny_config(entropy_control={"method": "target-entropy", "target": 1.0}, rollout={"prompts_per_step": 1})
    with pytest.raises(ValueError, match="target-entropy needs `prompts_per_step` >= 2"):
        Trainer(config, tmp_path)
    assert not any(tmp_path.iterdir())


def test_same_seed_same_run(tmp_path):
    runs = []
    for name in ("a", "b"):
        model, tok = build_model("tiny-random", 0, torch.device("cpu"))
        history = Trainer(tiny_config(steps=2), tmp_path / name, model=model, tokenizer=tok, progress=False).run()
        runs.append([{k: v for k, v in r.items() if k not in TIMING} for r in history])
    assert runs[0] == runs[1]


# ---------------------------------------------------------------- processes: kill and resume, torchrun, CLI
def _cli(*args, **kwargs):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "entrodec.train", *args], capture_output=True, text=True, env=env,
                          timeout=600, **kwargs)


def _without_timing(records):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


@pytest.mark.slow
def test_killed_run_resumes_with_identical_metrics(tmp_path):
    steps = 6
    straight = _cli("--preset", "tiny", "--steps", str(steps), "--output", str(tmp_path / "straight"), "--quiet")
    assert straight.returncode == 0, straight.stderr
    victim = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "entrodec.train", "--preset", "tiny", "--steps", str(steps),
                                "--output", str(victim), "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while len(read_metrics(victim)) < 3 and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    cut = len(read_metrics(victim))
    assert 3 <= cut < steps, "the run was not killed mid-way"
    resumed = _cli("--resume", "--output", str(victim), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert _without_timing(read_metrics(victim)) == _without_timing(read_metrics(tmp_path / "straight"))


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    result = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "entrodec.train", "--preset", "tiny",
         "--steps", "2", "--output", str(tmp_path), "--quiet"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    history = read_metrics(tmp_path)
    assert [r["step"] for r in history] == [0, 1]  # one record per step, written by rank 0 only
    assert (tmp_path / "checkpoint.pt").is_file() and (tmp_path / "model" / "config.json").is_file()


@pytest.mark.parametrize("args, message", [
    ([], "give --config FILE or --preset NAME"),
    (["--resume"], "--resume needs --output"),
    (["--resume", "--output", "x", "--preset", "tiny"], "--resume continues with the run's own config"),
    (["--preset", "nope"], "unknown training preset 'nope'; available: demo, tiny"),
    (["--config", "missing.yaml"], "training config 'missing.yaml' does not exist"),
    (["--resume", "--output", "no-such-run"], "no-such-run/config.yaml' does not exist"),
])
def test_cli_errors(args, message, capsys):
    from entrodec.decoding.cli import main

    assert main(["train", *args]) == 2
    assert message in capsys.readouterr().err


def test_cli_refuses_to_overwrite_a_run(tmp_path, capsys):
    from entrodec.decoding.cli import main

    (tmp_path / "metrics.jsonl").write_text("")
    assert main(["train", "--preset", "tiny", "--output", str(tmp_path), "--quiet"]) == 2
    assert "already holds a run; resume it (--resume)" in capsys.readouterr().err


# ---------------------------------------------------------------- configs and tasks
def test_config_file_and_its_errors(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: tiny-random\ntask: {name: arithmetic, max_operand: 5}\nsteps: 3\n"
                    "rollout: {group_size: 4}\noptim: {lr: 1}\nentropy_control: {method: forking-tokens, rho: 0.5}\n")
    config = load_config(path)
    assert config.steps == 3 and config.rollout.group_size == 4 and config.optim.lr == 1.0
    assert config.rollout.prompts_per_step == 4  # defaults fill the rest
    bad = [
        ({"stepz": 1}, "unknown key(s) stepz"),
        ({"rollout": {"group_size": 1}}, "`rollout.group_size` must be an integer >= 2, got 1"),
        ({"rollout": {"groups": 2}}, "rollout: unknown key(s) groups"),
        ({"loss": {"aggregation": "sum"}}, "`loss.aggregation` must be one of token-mean, sequence-mean"),
        ({"optim": {"lr": "fast"}}, "optim.lr must be a float, got 'fast'"),
        ({"behaviour": {"mode": "magic"}}, "`behaviour.mode` must be one of truncated-is, recompute, ignore"),
        ({"entropy_control": "clip-cov"}, "`entropy_control` must be a mapping with a `method`"),
    ]
    for data, message in bad:
        with pytest.raises(ValueError) as error:
            config_from_dict(data)
        assert message in str(error.value), (data, str(error.value))


def test_shipped_tasks_are_deterministic_and_verifiable():
    task = Arithmetic(max_operand=9, operations="+-*")
    examples = task.examples(0, 3, 5)
    assert examples == task.examples(0, 3, 5) and examples != task.examples(0, 4, 5)
    for example in examples:
        a, op, b = example.prompt.split("?")[0].split()[2:5]
        value = eval(f"{a}{op}{b}")  # noqa: S307 - our own digits
        assert task.reward(example, f"The answer is {value}.") == 1.0
        assert task.reward(example, f"{value + 1}") == 0.0
    lower = Lowercase()
    example = lower.examples(0, 0, 1)[0]
    assert lower.reward(example, "the sea is calm.") == 1.0 and lower.reward(example, "The Sea") == pytest.approx(4 / 6)
    assert lower.reward(example, "123") == 0.0
    with pytest.raises(ValueError, match="`operations` must be made of"):
        Arithmetic(operations="/")
    digits = DigitsFormat(min_digits=3, max_digits=3)
    example = digits.examples(0, 0, 1)[0]
    assert example.prompt == "Write a number with exactly 3 digits and nothing else."
    assert digits.reward(example, " 123\n") == 1.0 and digits.reward(example, "1234") == 0.5
    assert digits.reward(example, "12ab") == pytest.approx(0.25) and digits.reward(example, "") == 0.0
    with pytest.raises(ValueError, match="`max_digits` must be an integer >= 3, got 2"):
        DigitsFormat(min_digits=3, max_digits=2)


def test_prompt_file_task_with_a_user_reward(tmp_path, monkeypatch):
    from entrodec.train import make_task
    from entrodec.train.tasks import checked_reward

    (tmp_path / "prompts.jsonl").write_text('{"prompt": "Say hi", "answer": "hi"}\n{"prompt": "Say yo", "answer": "yo"}\n')
    (tmp_path / "my_reward.py").write_text("def score(prompt, completion, answer):\n    return float(answer in completion)\n")
    monkeypatch.chdir(tmp_path)
    task = make_task(prompts="prompts.jsonl", reward="my_reward:score")
    first, second = task.examples(0, 0, 2)
    assert {first.answer, second.answer} == {"hi", "yo"}
    assert checked_reward(task, first, f"well {first.answer}") == 1.0
    broken = make_task(prompts="prompts.jsonl", reward=lambda p, c, a: 2.0)
    with pytest.raises(ValueError, match=r"must be a number in \[0, 1\], got 2.0"):
        checked_reward(broken, first, "x")
    with pytest.raises(ValueError, match="`reward` my_reward:nothing: my_reward has no callable 'nothing'"):
        make_task(prompts="prompts.jsonl", reward="my_reward:nothing")
