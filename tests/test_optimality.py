"""`optimal` judged on the figures the report prints, with the real targets (issue 10).

The judge is exhaustive search: every supported assignment of a small ONNX graph is turned into a plan with
`build_plan` and its printed objective (`Plan.objective_value()`) read off; `optimal` must reach the minimum.
Nothing here looks at the partitioner's internal model, so per-segment launches, fusion that holds only
inside a segment, transfers once per tensor and destination, and idle power are judged as printed.

Graphs are real ONNX (Conv, MatMul, bias Add, scalar Mul, Relu, Sigmoid, Tanh, Add, Mul on one activation
shape, sizes drawn so both targets win somewhere), with the pairs onnxruntime fuses (Conv -> Relu,
Conv -> Add, MatMul -> bias Add, MatMul -> scalar Mul). Targets are the presets h100-sxm and tpu-v4-like
with their segment launch (GPU session_us, ASIC launch_us) drawn from 0 to 40 us, the GPU's kernel
launch_us from 0 to 10 us, idle power from 0 to the preset's and the links' fixed cost 1 or 10 us (written
as modified spec files), and for three targets one more preset: a100-sxm, edge-npu or host-cpu (which
becomes the host).

Sizes: exhaustive search prices 2**n (two targets) or up to 3**n (three) plans at ~0.4 ms each, so the
quick suite draws graphs of up to 10 nodes for two targets and 7 for three; the slow budget goes to 14 and 9
(10-14 and 6-9). Only nodes that more than one target runs multiply the count (the ASIC runs no Sigmoid, Tanh
or Mul). `optimal` enumerates problems that small itself, so each graph is also planned with enumeration
switched off (PATHS), the path large graphs take: there a plan claimed optimal must equal brute force and
any other must carry a gap that bounds its distance to it.

Also here: the issue's two counterexamples; a plan's figures recomputed from Target.cost / fusion /
segment_overhead and idle power; energy at least the idle floor; and (slow) every zoo model and objective,
optimal against every strategy.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import ModelProto, TensorProto, helper, numpy_helper

from dispatch.errors import DispatchError
from dispatch.frontend import load
from dispatch.ir import Graph
from dispatch.partition import build_problem, compare_strategies, plan, plan_problem
from dispatch.plan import Plan, assignment_array, build_plan
from targets.base import SPEC_DIR, Target, make_target

OBJECTIVES = ("latency", "energy", "edp", "makespan")
DEFAULT = {"gpu": "h100-sxm", "asic": "tpu-v4-like"}
THIRD = {"a100-sxm": "gpu2", "edge-npu": "npu", "host-cpu": "cpu"}  # preset -> target name
REL = 1e-9  # relative tolerance of "equal" (float sums in another order)
TINY = 1e-18  # absolute, far below any objective's scale (EDP of a 1 us, 1 uJ plan is 1e-12)


def no_worse(a: float, b: float, rel: float = REL) -> bool:
    """a <= b up to rounding."""
    return a <= b + rel * abs(b) + TINY


# -- small ONNX graphs ---------------------------------------------------------------------------------------
UNARY = ("relu", "sigmoid", "tanh", "scale", "bias")
BINARY = ("add", "mul")
WEIGHTED = ("conv", "matmul")
PAIRS = ("conv+relu", "conv+add", "matmul+bias", "matmul+scale")
KINDS = WEIGHTED + UNARY + BINARY + PAIRS


@dataclass(frozen=True)
class DagSpec:
    """A graph to build: one activation shape (1, c, h, w); nodes as (kind, input picks, kernel size)."""

    c: int
    h: int
    w: int
    nodes: tuple[tuple[str, tuple[int, int], int], ...]  # picks count back from the newest tensor
    extra_output: int  # > 0: that tensor (counted back) is also a graph output

    @property
    def num_nodes(self) -> int:
        return sum(1 + ("+" in kind) for kind, _, _ in self.nodes)


def dag_specs(max_nodes: int, min_nodes: int = 1) -> st.SearchStrategy[DagSpec]:
    @st.composite
    def build(draw: st.DrawFn) -> DagSpec:
        n = draw(st.integers(min_nodes, max_nodes))
        nodes: list[tuple[str, tuple[int, int], int]] = []
        count = 0
        while count < n:
            kind = draw(st.sampled_from(KINDS))
            if "+" in kind and count + 2 > n:
                kind = kind.split("+")[0]
            picks = (draw(st.integers(0, 3)), draw(st.integers(0, 4)))
            nodes.append((kind, picks, draw(st.sampled_from((1, 3)))))
            count += 1 + ("+" in kind)
        return DagSpec(c=draw(st.sampled_from((4, 32, 128))), h=draw(st.sampled_from((7, 28))),
                       w=draw(st.sampled_from((16, 64, 256))), nodes=tuple(nodes),
                       extra_output=draw(st.integers(0, 3)))

    return build()


def dag_model(spec: DagSpec) -> ModelProto:
    """The ONNX model of a DagSpec: inputs x (and x2 when read), every unread tensor an output."""
    rng = np.random.default_rng(0)
    c, w = spec.c, spec.w
    shape = [1, c, spec.h, w]
    inits: list[TensorProto] = []
    protos = []
    avail = ["x", "x2"]
    read: set[str] = set()

    def const(a: np.ndarray) -> str:
        name = f"k{len(inits)}"
        inits.append(numpy_helper.from_array(a.astype(np.float32), name))
        return name

    def emit(op: str, ins: list[str], **attrs: object) -> str:
        out = f"t{len(protos)}"
        protos.append(helper.make_node(op, ins, [out], name=f"n{len(protos)}", **attrs))
        read.update(ins)
        avail.append(out)
        return out

    def pick(back: int) -> str:
        return avail[-1 - back % len(avail)]

    def one(kind: str, x: str, y: str, k: int) -> str:
        if kind == "conv":
            wt = const(rng.standard_normal((c, c, k, k)) / np.sqrt(c * k * k))
            return emit("Conv", [x, wt, const(rng.standard_normal(c) * 0.1)], kernel_shape=[k, k],
                        pads=[k // 2] * 4)
        if kind == "matmul":
            return emit("MatMul", [x, const(rng.standard_normal((w, w)) / np.sqrt(w))])
        if kind == "bias":
            return emit("Add", [x, const(rng.standard_normal(w) * 0.1)])
        if kind == "scale":
            return emit("Mul", [x, const(np.array(0.5))])
        if kind in ("add", "mul"):
            return emit(kind.capitalize(), [x, y])
        return emit(kind.capitalize(), [x])  # relu, sigmoid, tanh

    for kind, (p0, p1), k in spec.nodes:
        x = pick(p0) if protos else "x"
        y = pick(p1)
        if "+" in kind:
            first, second = kind.split("+")
            one(second, one(first, x, y, k), y, k)
        else:
            one(kind, x, y, k)
    outs = [t for t in avail[2:] if t not in read]
    if spec.extra_output and len(avail) > 3:
        extra = avail[-1 - spec.extra_output % (len(avail) - 2)]
        if extra not in outs and extra.startswith("t"):
            outs.append(extra)
    vi = {t: helper.make_tensor_value_info(t, TensorProto.FLOAT, shape) for t in avail}
    graph = helper.make_graph(protos, "dag", [vi[t] for t in ("x", "x2") if t in read], [vi[t] for t in outs],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def dag(spec: DagSpec) -> Graph:
    return load(dag_model(spec))


# -- targets: presets with launch and idle power changed -----------------------------------------------------
@dataclass(frozen=True)
class Knobs:
    """What the drawn targets change in the presets (us; idle power as a share of the preset's)."""

    gpu_session_us: float
    gpu_launch_us: float
    asic_launch_us: float
    idle_share: float
    link_us: float  # both links' fixed cost per transfer (the presets say 10 us)


KNOBS = st.builds(Knobs, st.sampled_from((0.0, 5.0, 20.0, 40.0)), st.sampled_from((0.0, 5.0, 10.0)),
                  st.sampled_from((0.0, 2.0, 8.0, 30.0)), st.sampled_from((0.0, 0.5, 1.0)),
                  st.sampled_from((1.0, 10.0)))


def _set(text: str, key: str, value: float) -> str:
    new, count = re.subn(rf"^{key}\s*=\s*[0-9.eE+-]+", f"{key} = {value!r}", text, flags=re.MULTILINE)
    assert count == 1, f"the preset has no single '{key} = ...' line to change"
    return new


class TargetMaker:
    """Targets from presets with figures changed, written as spec files under `root`; built once each."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cache: dict[tuple, Target] = {}

    def spec_file(self, preset: str, **values: float) -> Path:
        text = (SPEC_DIR / f"{preset}.toml").read_text()
        for key, value in values.items():
            text = _set(text, key, value)
        path = self.root / (preset + "".join(f"-{k}{v:g}" for k, v in values.items()) + ".toml")
        path.write_text(text)
        return path

    def idle(self, preset: str, share: float) -> float:
        m = re.search(r"^idle_w\s*=\s*([0-9.]+)", (SPEC_DIR / f"{preset}.toml").read_text(), re.MULTILINE)
        assert m, f"{preset} has no idle_w"
        return float(m.group(1)) * share

    def targets(self, knobs: Knobs, third: str | None = None) -> dict[str, Target]:
        key = (knobs, third)
        if key not in self.cache:
            gpu = self.spec_file("h100-sxm", session_us=knobs.gpu_session_us, launch_us=knobs.gpu_launch_us,
                                 idle_w=self.idle("h100-sxm", knobs.idle_share), latency_us=knobs.link_us)
            asic = self.spec_file("tpu-v4-like", idle_w=self.idle("tpu-v4-like", knobs.idle_share),
                                  latency_us=knobs.link_us)
            out = {"gpu": make_target("gpu", gpu), "asic": make_target("asic", asic,
                                                                        launch_us=knobs.asic_launch_us)}
            if third is not None:
                out[THIRD[third]] = make_target(THIRD[third], third)
            self.cache[key] = out  # type: ignore[assignment]
        return self.cache[key]  # type: ignore[return-value]


@pytest.fixture(scope="module")
def maker(tmp_path_factory: pytest.TempPathFactory) -> TargetMaker:
    return TargetMaker(tmp_path_factory.mktemp("specs"))


# -- the judge -----------------------------------------------------------------------------------------------
def assignments(supported: np.ndarray) -> Iterator[np.ndarray]:
    """Every assignment that puts each node on a target that runs it."""
    for a in itertools.product(*(np.flatnonzero(row).tolist() for row in supported)):
        yield np.array(a, np.int64)


def brute_force(graph: Graph, targets: dict[str, Target], objective: str) -> tuple[float, np.ndarray, int]:
    """(min printed objective, an assignment reaching it, plans priced) over every supported assignment."""
    p = build_problem(graph, targets, objective)
    best, arg, count = np.inf, None, 0
    for a in assignments(p.supported):
        v = build_plan(p, a, "brute force").objective_value()
        count += 1
        if v < best:
            best, arg = v, a
    assert arg is not None
    return float(best), arg, count


# optimal as shipped (it enumerates small problems itself), then forced onto the path large graphs take:
# bound (min cut / MILP) + candidates + local search, which must be honest (claimed optimal => equal to brute
# force; otherwise a gap that bounds the distance), though it need not reach the optimum.
PATHS = {"as shipped": {}, "bound path": {"enumerate_limit": 0, "makespan_enumerate_limit": 0}}


def judge(graph: Graph, targets: dict[str, Target], objective: str) -> tuple[Plan, float]:
    """Plan with `optimal` on both PATHS and check each against exhaustive search on the printed objective;
    returns (the plan as shipped, brute-force minimum)."""
    best, arg, _ = brute_force(graph, targets, objective)
    p = build_problem(graph, targets, objective)
    plans = {path: plan(graph, targets, "optimal", objective, **opts) for path, opts in PATHS.items()}
    for path, pl in plans.items():
        again = build_plan(p, assignment_array(p, pl.assignment), "optimal").objective_value()
        assert again == pytest.approx(pl.objective_value(), rel=REL, abs=TINY), \
            f"{path}: plan() and build_plan() print different objectives for the same assignment"
        where = (f"{path}, {objective}: optimal prints {pl.objective_value():.9g} "
                 f"(optimal={pl.optimal}, gap={pl.gap}), brute force {best:.9g} at {arg.tolist()}")
        assert no_worse(best, pl.objective_value()), f"brute force beat its own minimum? {where}"
        if pl.optimal:  # claimed proven: equal, up to the gap the solver says it stopped at
            assert no_worse(pl.objective_value(), best, REL + (pl.gap or 0.0)), f"claimed optimal: {where}"
        else:  # the reported gap must bound the distance to the optimum
            assert pl.gap is not None, f"not proven optimal and no gap reported: {where}"
            assert no_worse(pl.objective_value() * (1 - pl.gap), best), f"gap is not a bound: {where}"
    pl = plans["as shipped"]
    assert no_worse(pl.objective_value(), best), f"optimal is worse than exhaustive search: {where}"
    return pl, best


def check_figures(pl: Plan) -> None:
    """The printed objective is the figure the objective names."""
    value = {"latency": pl.predicted.latency_s, "energy": pl.predicted.energy_j,
             "makespan": pl.makespan_s}.get(pl.objective)
    if value is not None:
        assert pl.objective_value() == pytest.approx(value, rel=REL, abs=TINY)
    assert pl.makespan_s <= pl.predicted.latency_s * (1 + REL) + TINY


SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}


# -- exhaustive search as the judge --------------------------------------------------------------------------
@pytest.mark.parametrize("objective", OBJECTIVES)
@settings(max_examples=40, **SETTINGS)
@given(spec=dag_specs(10), knobs=KNOBS)
def test_optimal_equals_brute_force_two_targets(maker: TargetMaker, objective: str, spec: DagSpec,
                                                knobs: Knobs) -> None:
    pl, _ = judge(dag(spec), maker.targets(knobs), objective)
    check_figures(pl)


@pytest.mark.parametrize("objective", OBJECTIVES)
@settings(max_examples=25, **SETTINGS)
@given(spec=dag_specs(7), knobs=KNOBS, third=st.sampled_from(sorted(THIRD)))
def test_optimal_equals_brute_force_three_targets(maker: TargetMaker, objective: str, spec: DagSpec,
                                                  knobs: Knobs, third: str) -> None:
    pl, _ = judge(dag(spec), maker.targets(knobs, third), objective)
    check_figures(pl)


@pytest.mark.slow
@pytest.mark.parametrize("objective", OBJECTIVES)
@settings(max_examples=30, **SETTINGS)
@given(spec=dag_specs(14, 10), knobs=KNOBS)
def test_optimal_equals_brute_force_two_targets_up_to_14_nodes(maker: TargetMaker, objective: str,
                                                               spec: DagSpec, knobs: Knobs) -> None:
    judge(dag(spec), maker.targets(knobs), objective)


@pytest.mark.slow
@pytest.mark.parametrize("objective", OBJECTIVES)
@settings(max_examples=20, **SETTINGS)
@given(spec=dag_specs(9, 6), knobs=KNOBS, third=st.sampled_from(sorted(THIRD)))
def test_optimal_equals_brute_force_three_targets_up_to_9_nodes(maker: TargetMaker, objective: str,
                                                                spec: DagSpec, knobs: Knobs,
                                                                third: str) -> None:
    judge(dag(spec), maker.targets(knobs, third), objective)


# -- the counterexamples -----------------------------------------------------------------------------
def two_matmuls(m: int = 32, k: int = 256, n: int = 256) -> Graph:
    """x (m x k) feeds two MatMuls (k x n weights) whose outputs are multiplied: y = (x W1) * (x W2)."""
    rng = np.random.default_rng(0)
    w1, w2 = (numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32), f"w{i}")
              for i in (1, 2))
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"], name="mm1"),
             helper.make_node("MatMul", ["x", "w2"], ["b"], name="mm2"),
             helper.make_node("Mul", ["a", "b"], ["y"], name="mul")]
    g = helper.make_graph(nodes, "two_matmuls",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])], [w1, w2])
    return load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


def diamond(m: int = 128, k: int = 512) -> Graph:
    """x -> Sigmoid -> MatMul, x -> Tanh -> MatMul; Add; Sigmoid (weights k x k)."""
    rng = np.random.default_rng(0)
    w1, w2 = (numpy_helper.from_array(rng.standard_normal((k, k)).astype(np.float32), f"w{i}")
              for i in (1, 2))
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"], name="sig"),
             helper.make_node("Tanh", ["x"], ["t"], name="tanh"),
             helper.make_node("MatMul", ["s", "w1"], ["a"], name="mm1"),
             helper.make_node("MatMul", ["t", "w2"], ["b"], name="mm2"),
             helper.make_node("Add", ["a", "b"], ["c"], name="add"),
             helper.make_node("Sigmoid", ["c"], ["y"], name="out")]
    g = helper.make_graph(nodes, "diamond", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, k])], [w1, w2])
    return load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


@pytest.mark.parametrize("idle_share", [1.0, 0.0])
def test_two_matmuls_for_energy_never_worse_than_greedy_or_only_asic(maker: TargetMaker,
                                                                    idle_share: float) -> None:
    """Issue 10 (a): planned for energy on the default targets, the "proven optimal" plan printed 2.65 mJ
    while greedy and only:asic printed 1.89 mJ (x 32x256, weights 256x256; before idle power was counted).
    With the presets' idle power all-GPU wins outright; with idle power 0 the launch per segment decides, as
    in the issue. Optimal must be no worse than either baseline, and equal brute force."""
    targets = maker.targets(Knobs(20.0, 5.0, 0.0, idle_share, 10.0))  # the presets' launch and link figures
    g = two_matmuls()
    table = compare_strategies(build_problem(g, targets, "energy"))
    best = table["optimal"]["objective"]
    for name in ("greedy", "only:asic"):
        assert no_worse(best, table[name]["objective"]), (best, name, table[name]["objective"])
    judge(g, targets, "energy")


@pytest.mark.parametrize("idle_share", [1.0, 0.0])
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_diamond_with_8us_launch_equals_brute_force(maker: TargetMaker, objective: str,
                                                    idle_share: float) -> None:
    """Issue 10 (b): with an 8 us ASIC launch per segment, optimal was 1.13x the brute-force best for energy
    (m=128, k=512; measured before the fix, idle power not counted then)."""
    targets = maker.targets(Knobs(20.0, 5.0, 8.0, idle_share, 10.0))
    pl, _ = judge(diamond(), targets, objective)
    check_figures(pl)


# -- the printed figures from the targets' own answers -------------------------------------------------------
def random_plans(graph: Graph, targets: dict[str, Target], objective: str, seed: int,
                 count: int) -> list[Plan]:
    """`count` plans of random supported assignments."""
    p = build_problem(graph, targets, objective)
    rng = np.random.default_rng(seed)
    return [build_plan(p, np.array([rng.choice(np.flatnonzero(row)) for row in p.supported]), "random")
            for _ in range(count)]


@settings(max_examples=15, **SETTINGS)
@given(spec=dag_specs(12), knobs=KNOBS, third=st.sampled_from([None, *sorted(THIRD)]),
       seed=st.integers(0, 99))
def test_figures_follow_from_the_targets(maker: TargetMaker, spec: DagSpec, knobs: Knobs, third: str | None,
                                         seed: int) -> None:
    """Recompute a plan's figures from Target.cost, Target.fusion and Target.segment_overhead alone:
    a segment costs its nodes, less the saving of every fusion pair with both nodes in it (a pair split
    across segments saves nothing), plus one launch; latency is segments + transfers in sequence; energy adds,
    for every target holding a node, idle_w x (latency - that target's busy time) (dispatch/objective.py)."""
    from dispatch.analysis import analyze

    g = dag(spec)
    targets = maker.targets(knobs, third)
    ops = dict(zip((nd.name for nd in g.nodes), analyze(g), strict=True))
    nodes = {nd.name: nd for nd in g.nodes}
    for pl in random_plans(g, targets, "energy", seed, 4):
        busy: dict[str, float] = {}
        for seg in pl.segments:
            t = targets[seg.target]
            lat = en = 0.0
            for name in seg.nodes:
                c = t.cost(nodes[name], ops[name])
                lat, en = lat + c.latency_s, en + c.energy_j
                fused = t.fusion(nodes[name], ops[name])
                if fused is not None and fused[0] in seg.nodes:
                    lat, en = lat - fused[1].latency_s, en - fused[1].energy_j
            o = t.segment_overhead()
            assert seg.cost.latency_s == pytest.approx(lat + o.latency_s, rel=1e-9, abs=1e-15), seg
            assert seg.cost.energy_j == pytest.approx(en + o.energy_j, rel=1e-9, abs=1e-15), seg
            busy[seg.target] = busy.get(seg.target, 0.0) + seg.cost.latency_s
        latency = sum(s.cost.latency_s for s in pl.segments) + sum(x.cost.latency_s for x in pl.transfers)
        assert pl.predicted.latency_s == pytest.approx(latency, rel=1e-9, abs=1e-15)
        energy = (sum(s.cost.energy_j for s in pl.segments) + sum(x.cost.energy_j for x in pl.transfers)
                  + sum(targets[t].spec.idle_w * (latency - b) for t, b in busy.items()))
        assert pl.predicted.energy_j == pytest.approx(energy, rel=1e-9, abs=1e-15)


# -- idle power: energy per inference is at least the idle draw of the targets that wait ---------------------
def idle_floor(pl: Plan, targets: dict[str, Target]) -> float:
    """Sum over the targets holding nodes of idle power x the sequential latency."""
    return sum(targets[t].spec.idle_w for t in set(pl.assignment.values())) * pl.predicted.latency_s


@settings(max_examples=15, **SETTINGS)
@given(spec=dag_specs(12), knobs=KNOBS, third=st.sampled_from([None, *sorted(THIRD)]),
       seed=st.integers(0, 99))
def test_energy_at_least_idle_power_times_latency(maker: TargetMaker, spec: DagSpec, knobs: Knobs,
                                                  third: str | None, seed: int) -> None:
    """For any placement (random ones, and every strategy's), whatever the objective."""
    g = dag(spec)
    targets = maker.targets(knobs, third)
    plans = random_plans(g, targets, "energy", seed, 5)
    for name in ("optimal", "greedy", "heft", "priority"):
        plans.append(plan(g, targets, name, "energy"))
    for pl in plans:
        floor = idle_floor(pl, targets)
        assert no_worse(floor, pl.predicted.energy_j), \
            f"{pl.strategy}: {pl.predicted.energy_j:.4g} J < idle floor {floor:.4g} J"


ZOO_TARGETS = {"gpu+asic": DEFAULT, "gpu+asic+cpu": {**DEFAULT, "cpu": "host-cpu"}}


@pytest.mark.slow
@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("which", sorted(ZOO_TARGETS))
def test_every_zoo_model_optimal_no_worse_than_any_strategy(which: str, objective: str) -> None:
    """Real targets. Optimal's printed objective <= every strategy's; only optimal claims a proof, and when it
    claims none it reports a gap; every plan's energy is at least the idle floor (so its average power is at
    least its targets' idle power). Every violation is collected, then reported together."""
    models = pytest.importorskip("models")
    targets = {n: make_target(n, p) for n, p in ZOO_TARGETS[which].items()}
    bad: list[str] = []
    planned = []
    for name in models.list_models():
        g = load(name)
        try:
            p = build_problem(g, targets, objective)
        except DispatchError as e:  # a variant with a node none of these targets runs (e.g. int8 on a GPU)
            assert "can run on none of the targets" in str(e), (name, str(e))
            continue
        planned.append(name)
        table = compare_strategies(p)
        best = table["optimal"]
        if "error" in best:
            bad.append(f"{name}: optimal failed: {best['error']}")
            continue
        for s, row in table.items():
            if "error" in row:
                continue
            if row["fits"] and not no_worse(best["objective"], row["objective"]):
                bad.append(f"{name}: optimal {best['objective']:.6g} > {s} {row['objective']:.6g} "
                           f"({best['objective'] / row['objective']:.3f}x)")
            if s != "optimal" and row["optimal"]:
                bad.append(f"{name}: {s} claims to be optimal")
            pl = plan_problem(p, s)
            if pl.objective_value() != pytest.approx(row["objective"], rel=REL, abs=TINY):
                bad.append(f"{name}: {s} prints {pl.objective_value():.6g} alone, {row['objective']:.6g} in "
                           "the strategies table")
            floor = idle_floor(pl, targets)
            if not no_worse(floor, pl.predicted.energy_j):
                bad.append(f"{name}: {s} energy {pl.predicted.energy_j:.4g} J < idle floor {floor:.4g} J")
            if s == "optimal" and not pl.optimal and pl.gap is None:
                bad.append(f"{name}: optimal is neither proven nor given a gap")
    assert {"mlp", "resnet50", "bert", "gpt2"} <= set(planned), planned
    assert not bad, f"{which}, {objective}:\n" + "\n".join(bad)


def test_planning_refuses_an_unknown_objective() -> None:
    with pytest.raises(DispatchError, match="objective"):
        build_problem(two_matmuls(), DEFAULT, "throughput")


def test_makespan_is_an_objective() -> None:
    """--objective makespan exists: the printed objective is the list-schedule time."""
    pl = plan(diamond(), DEFAULT, "optimal", "makespan")
    assert pl.objective == "makespan"
    assert pl.objective_value() == pytest.approx(pl.makespan_s, rel=REL)
