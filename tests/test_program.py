"""Recorded programs (issue 13): the reader, the properties, the replay under each
model, the CLI contract, and an independent naive interpreter held against the
replay on random programs."""

from __future__ import annotations

import dataclasses
import io
import json
import random

import pytest

from programs_util import batch, coll, p2p, program, text, wait
from verifier.check.program import PROGRAM_MODELS, check_program
from verifier.cli.app import main
from verifier.errors import ScheduleError
from verifier.format.io import parse_json_text
from verifier.format.program import dumps_program, parse_program_text, program_from_dict
from verifier.results.check import Status, Verdict
from verifier.results.program import ProgramProperty

MODELS = tuple(PROGRAM_MODELS)


def run_cli(tmp_path, doc, *flags):
    f = tmp_path / "prog.json"
    f.write_text(text(doc) if isinstance(doc, dict) else doc)
    out, err = io.StringIO(), io.StringIO()
    rc = main(["check", str(f), *flags], out, err)
    return rc, out.getvalue(), err.getvalue()


def terminates(doc) -> dict:
    r = check_program(program_from_dict(doc), "all")
    return {m.model: m.terminates for m in r.models}


# ------------------------------------------------------------ reader


def test_round_trip_and_one_op_a_line():
    doc = program([p2p("isend", 1, 10, handle=0, payload=("F", 0, 0)), wait(0, 11), coll("barrier", 12)],
                  [p2p("irecv", 0, 20, handle=5), wait(5, 21), coll("barrier", 22)],
                  recorded={"command": ["train.py"], "outcome": "finished"})
    p = program_from_dict(doc)
    t = dumps_program(p)
    assert parse_program_text(t) == p
    assert t.count("\n") >= 6  # one op a line


@pytest.mark.parametrize("mutate, place, words", [
    (lambda d: d["ranks"][1]["ops"][0].update(peer="x"), "$.ranks[1].ops[0].peer (rank 1 op 0)", "expected integer"),
    (lambda d: d["ranks"][0]["ops"][0].pop("handle"), "$.ranks[0].ops[0] (rank 0 op 0)", "'handle'"),
    (lambda d: d["ranks"][0]["ops"][0].update(op="sendd"), "$.ranks[0].ops[0].op", "sendd"),
    (lambda d: d["ranks"].reverse(), "$.ranks[0].rank", "rank order"),
    (lambda d: d["ranks"][1]["ops"].append(p2p("irecv", 0, 9, handle=5)), "$.ranks[1].ops[2].handle (rank 1 op 2)",
     "handle 5 is issued twice"),
    (lambda d: d.update(num_ranks=3), "$.ranks", "num_ranks is 3"),
])
def test_bad_documents_name_file_rank_op_and_value(mutate, place, words):
    doc = program([p2p("isend", 1, 10, handle=0), wait(0, 11)], [p2p("irecv", 0, 20, handle=5), wait(5, 21)])
    mutate(doc)
    with pytest.raises(ScheduleError) as e:
        program_from_dict(doc, "run.json")
    assert str(e.value).startswith("run.json: ") and place in str(e.value) and words in str(e.value)


def test_a_program_is_not_a_schedule_and_schedules_read_unchanged():
    doc = program([], [])
    with pytest.raises(ScheduleError, match="recorded program"):
        parse_json_text(text(doc), "p.json")
    from verifier.generators import generate
    from verifier.format.io import dumps_json
    s = generate("1f1b", 2, 2)
    assert parse_json_text(dumps_json(s)) == s  # 1.0, no "kind": unchanged


# ------------------------------------------------------------ properties


def test_blocking_sends_both_ways_deadlock_under_rendezvous_models_only():
    doc = program([p2p("send", 1, 88), p2p("recv", 1, 89)], [p2p("send", 0, 91), p2p("recv", 0, 92)])
    assert terminates(doc) == {"nccl": False, "nccl-pairs": False, "gloo": False, "eager": True}
    r = check_program(program_from_dict(doc), "gloo")
    assert r.verdict is Verdict.REFUTED and r.failed == (ProgramProperty.DEADLOCK_FREE,)
    o = r.outcome("gloo")
    assert o.closed and [h.place.rank for h in o.hops] == [0, 1]
    assert "rank 0 blocks in train.py:88 `send` to rank 1 (4x1024 bfloat16) while rank 1 blocks in " \
           "train.py:91 `send` to rank 0 (4x1024 bfloat16)" in o.summary
    assert any("tests with small tensors" in n for n in r.notes)


def test_isend_irecv_with_waits_terminate_everywhere():
    doc = program([p2p("isend", 1, 1, handle=0), p2p("irecv", 1, 2, handle=1), wait(0, 3), wait(1, 4)],
                  [p2p("irecv", 0, 1, handle=0), p2p("isend", 0, 2, handle=1), wait(1, 3), wait(0, 4)])
    assert all(terminates(doc).values())
    # both isend first: unbatched sends at the head of one stream (or of the
    # pair's) wait for receives queued behind them; gloo has no stream order
    doc["ranks"][1]["ops"][:2] = [p2p("isend", 0, 1, handle=0), p2p("irecv", 0, 2, handle=1)]
    assert terminates(doc) == {"nccl": False, "nccl-pairs": False, "gloo": True, "eager": True}
    assert check_program(program_from_dict(doc), "gloo").verdict is Verdict.VERIFIED
    assert check_program(program_from_dict(doc), "all").verdict is Verdict.REFUTED


def test_a_handle_waited_twice_blocks_forever_on_gloo_only():
    doc = program([p2p("isend", 1, 1, handle=0), wait(0, 2), wait(0, 3)],
                  [p2p("irecv", 0, 1, handle=0), wait(0, 2)])
    assert terminates(doc) == {"nccl": True, "nccl-pairs": True, "gloo": False, "eager": True}
    o = check_program(program_from_dict(doc), "gloo").outcome("gloo")
    assert o.hops[0].place.op == 2 and "second time" in o.hops[0].reason


def test_unbatched_ops_to_two_peers_in_opposite_orders_need_pair_streams():
    # rank 0: isend to 1 then isend to 2; ranks 1 and 2 answer in an order
    # that only pair streams (nccl-pairs) let through: rank 1 first receives
    # from 2, which waits for rank 0's op to 2 queued behind its op to 1
    doc = program(
        [p2p("isend", 1, 1, handle=0), p2p("isend", 2, 2, handle=1), wait(0, 3), wait(1, 4)],
        [p2p("recv", 2, 5), p2p("recv", 0, 6)],
        [p2p("recv", 0, 7), p2p("send", 1, 8)])
    t = terminates(doc)
    assert t["nccl"] is False and t["nccl-pairs"] is True and t["gloo"] is True and t["eager"] is True


def test_a_batch_is_one_unit_on_the_group_stream():
    # both ranks batch a send and a receive to each other: terminates everywhere
    doc = program([batch(1, p2p("isend", 1, 0, handle=0, top=False), p2p("irecv", 1, 0, handle=1, top=False)),
                   wait(0, 2), wait(1, 3)],
                  [batch(1, p2p("irecv", 0, 0, handle=0, top=False), p2p("isend", 0, 0, handle=1, top=False)),
                   wait(0, 2), wait(1, 3)])
    assert all(terminates(doc).values())


def test_batches_grouped_differently_on_the_two_sides():
    # rank 0 batches its send and receive with rank 1; rank 1 posts them as two plain ops
    doc = program([batch(1, p2p("isend", 1, 0, handle=0, top=False), p2p("irecv", 1, 0, handle=1, top=False)),
                   wait(0, 2), wait(1, 3)],
                  [p2p("irecv", 0, 5, handle=0), p2p("isend", 0, 6, handle=1), wait(0, 7), wait(1, 8)])
    vs = check_program(program_from_dict(doc)).result_of("message-matching").violations
    assert [v.code for v in vs] == ["batch-grouping"] and "nccl#1279" in vs[0].message
    same = program([batch(1, p2p("isend", 1, 0, handle=0, top=False), p2p("irecv", 1, 0, handle=1, top=False)),
                    wait(0, 2), wait(1, 3)],
                   [batch(5, p2p("irecv", 0, 0, handle=0, top=False), p2p("isend", 0, 0, handle=1, top=False)),
                    wait(0, 7), wait(1, 8)])
    assert check_program(program_from_dict(same)).result_of("message-matching").status is Status.HOLDS


def test_shape_and_payload_mismatch_name_both_lines():
    doc = program([p2p("send", 1, 88, shape=(4, 1024), payload=("F", 0, 1))],
                  [p2p("recv", 0, 91, shape=(4, 512), payload=("F", 1, 1))])
    r = check_program(program_from_dict(doc))
    (v,) = r.result_of("message-matching").violations
    assert "4x1024 bfloat16" in v.message and "4x512 bfloat16" in v.message
    assert "train.py:88" in v.message and "train.py:91" in v.message
    doc = program([p2p("send", 1, 88, payload=("F", 0, 1))], [p2p("recv", 0, 91, payload=("F", 1, 2))])
    (v,) = check_program(program_from_dict(doc)).result_of("message-matching").violations
    assert v.code == "payload" and "0F1" in v.message and "1F2" in v.message
    ok = program([p2p("send", 1, 88, payload=("F", 0, 1))], [p2p("recv", 0, 91, payload=("F", 1, 1))])
    assert check_program(program_from_dict(ok)).result_of("message-matching").status is Status.HOLDS


def test_unmatched_op_and_collective_order():
    doc = program([p2p("isend", 1, 1, handle=0), coll("all_reduce", 2), coll("barrier", 3)],
                  [coll("barrier", 4), coll("all_reduce", 5)])
    r = check_program(program_from_dict(doc), "eager")
    assert r.result_of("message-matching").violations[0].code == "unmatched"
    v = r.result_of("collective-order").violations[0]  # numbers 0 and 1 both differ
    assert "all_reduce" in v.message and "barrier" in v.message and "collective number 0" in v.message
    # collectives match by position, like messages: under eager the crossed
    # pair still "completes" (collective-order is what reports it); the
    # unmatched isend never completes under rendezvous models
    assert r.result_of("deadlock-free").status is Status.HOLDS
    assert terminates(doc) == {"nccl": False, "nccl-pairs": False, "gloo": False, "eager": True}


def test_well_formed_peers_groups_and_handles():
    doc = program([p2p("send", 0, 1), p2p("send", 7, 2), wait(3, 3), p2p("send", 1, 4, group=4)], [],
                  groups=[{"id": 0, "ranks": [0, 1]}])
    codes = [v.code for v in check_program(program_from_dict(doc)).result_of("well-formed").violations]
    assert codes == ["peer-self", "peer-range", "handle", "group"]


def test_a_raised_rank_explains_its_peers_block():
    doc = program([p2p("send", 1, 1)], [], outcomes={1: "raised"}, errors={1: "RuntimeError: boom"})
    r = check_program(program_from_dict(doc), "gloo")
    assert any("rank 1 ended with outcome raised (RuntimeError: boom)" in n for n in r.notes)
    assert "RuntimeError: boom" in r.outcome("gloo").summary
    assert r.result_of("message-matching").status is Status.HOLDS  # the recording ends early


def test_hung_recording_is_explained():
    doc = program([p2p("recv", 1, 88, returned=False)], [p2p("recv", 0, 91, returned=False)],
                  outcomes={0: "hung", 1: "hung"}, recorded={"backend_used": "gloo", "outcome": "hung"})
    r = check_program(program_from_dict(doc), "gloo")
    assert any("hung with these calls not returned" in n for n in r.notes)
    assert any("blocks at exactly the calls the run hung in" in n and "gloo" in n for n in r.notes), r.notes


# ------------------------------------------------------------ CLI


def test_cli_text_json_and_exit_codes(tmp_path):
    bad = program([p2p("send", 1, 88), p2p("recv", 1, 89)], [p2p("send", 0, 91), p2p("recv", 0, 92)])
    rc, out, _ = run_cli(tmp_path, bad, "--comm-model", "gloo")
    assert rc == 1 and out.startswith("REFUTED under gloo (engine: replay)")
    assert "1. rank 0 blocks in train.py:88 `send` to rank 1" in out and "a cycle of 2 waits" in out
    rc, out, _ = run_cli(tmp_path, bad, "--comm-model", "eager", "--format", "json")
    doc = json.loads(out)
    assert rc == 0 and doc["verdict"] == "VERIFIED" and doc["kind"] == "program"
    assert {m["model"]: m["terminates"] for m in doc["models"]} == {
        "nccl": False, "nccl-pairs": False, "gloo": False, "eager": True}
    rc, out, _ = run_cli(tmp_path, bad, "--comm-model", "all")
    assert rc == 1 and "models:" in out


def test_cli_bad_program_is_one_line_exit_2(tmp_path):
    doc = program([p2p("send", 1, 88)], [p2p("recv", 0, 91)])
    doc["ranks"][1]["ops"][0]["shape"] = [4, -1]
    rc, out, err = run_cli(tmp_path, doc)
    assert rc == 2 and out == "" and err.count("\n") == 1
    assert "prog.json" in err and "rank 1 op 0" in err and "-1" in err
    rc, _, err = run_cli(tmp_path, doc, "--memory-limit", "3")
    assert rc == 2


# ------------------------------------------------------------ an independent second opinion


def naive_terminates(doc: dict, model: str) -> bool:
    """A deliberately naive interpreter of SEMANTICS.md "Recorded programs": scan
    every rank and op until nothing changes; quadratic, shares no code with the
    replay. Ops are P2P (blocking or async), batches, waits, collectives."""
    streams = {"nccl": "rank", "nccl-pairs": "pair", "gloo": "none", "eager": "none"}[model]
    ranks = doc["ranks"]
    reqs = []  # [rank, op index, entry, is_send, peer, group, handle, unit]
    units = []  # [rank, op index, stream, kind]
    for rp in ranks:
        for k, op in enumerate(rp["ops"]):
            if op["op"] in ("send", "recv", "isend", "irecv", "batch", "collective"):
                kind = op["op"]
                if streams == "none":
                    st = None
                elif streams == "rank":
                    st = (rp["rank"],)
                elif kind in ("batch", "collective"):
                    st = (rp["rank"], "g", op["ops"][0]["group"] if kind == "batch" else op["group"])
                else:
                    st = (rp["rank"], "p", op["group"], min(rp["rank"], op["peer"]), max(rp["rank"], op["peer"]))
                units.append([rp["rank"], k, st, kind])
                for j, e in enumerate(op.get("ops", [op]) if kind != "collective" else []):
                    reqs.append([rp["rank"], k, j, e["op"] in ("send", "isend"), e["peer"], e["group"],
                                 e.get("handle"), len(units) - 1])
    partner = {}
    for i, a in enumerate(reqs):
        if a[3]:
            ks = [x for x in range(len(reqs)) if reqs[x][3] and (reqs[x][0], reqs[x][4], reqs[x][5]) == (a[0], a[4], a[5])]
            kr = [x for x in range(len(reqs)) if not reqs[x][3] and (reqs[x][4], reqs[x][0], reqs[x][5]) == (a[0], a[4], a[5])]
            n = ks.index(i)
            if n < len(kr):
                partner[i], partner[kr[n]] = kr[n], i
    pc = [0] * len(ranks)
    posted, done_req, done_unit, waited = set(), set(), set(), set()

    def unit_of(r, k):
        return next(u for u, x in enumerate(units) if x[0] == r and x[1] == k)

    def active(u):
        if u not in posted:
            return False
        return all(v in done_unit for v in range(u) if units[v][2] is not None and units[v][2] == units[u][2])

    def coll_done(u):
        r, k, _, _ = units[u]
        g = ranks[r]["ops"][k]["group"]
        mine = [v for v in range(len(units)) if units[v][0] == r and units[v][3] == "collective"
                and ranks[r]["ops"][units[v][1]]["group"] == g]
        n = mine.index(u)
        members = next(x["ranks"] for x in doc["groups"] if x["id"] == g)
        for m in members:
            theirs = [v for v in range(len(units)) if units[v][0] == m and units[v][3] == "collective"
                      and ranks[m]["ops"][units[v][1]]["group"] == g]
            if n >= len(theirs) or not active(theirs[n]):
                return False
        return True

    changed = True
    while changed:
        changed = False
        for i, a in enumerate(reqs):
            if i in done_req or not active(a[7]):
                continue
            if a[3] and model == "eager":
                done_req.add(i); changed = True
            elif i in partner and active(reqs[partner[i]][7]):
                done_req.add(i); changed = True
        for u in range(len(units)):
            if u in done_unit or u not in posted:
                continue
            mine = [i for i, a in enumerate(reqs) if a[7] == u]
            if (units[u][3] == "collective" and coll_done(u)) or (mine and all(i in done_req for i in mine)):
                done_unit.add(u); changed = True
        for r, rp in enumerate(ranks):
            while pc[r] < len(rp["ops"]):
                op = rp["ops"][pc[r]]
                if op["op"] in ("send", "recv", "isend", "irecv", "batch", "collective"):
                    u = unit_of(r, pc[r])
                    if u not in posted:
                        posted.add(u); changed = True
                    if op["op"] in ("send", "recv", "collective") and u not in done_unit:
                        break
                elif op["op"] == "wait":
                    i = next(x for x, a in enumerate(reqs) if a[0] == r and a[6] == op["handle"])
                    if (r, op["handle"]) in waited and model == "gloo":
                        break
                    ok = reqs[i][7] in done_unit if streams != "none" else i in done_req
                    if not ok:
                        break
                    waited.add((r, op["handle"]))
                pc[r] += 1
                changed = True
    return all(pc[r] == len(rp["ops"]) for r, rp in enumerate(ranks)) and len(done_unit) == len(units)


def random_program(rng: random.Random) -> dict:
    n = rng.randint(2, 3)
    ops = [[] for _ in range(n)]
    handles = [0] * n
    open_handles = [[] for _ in range(n)]
    for _ in range(rng.randint(1, 7)):
        a, b = rng.sample(range(n), 2)
        kind = rng.random()
        for r, peer, send in ((a, b, True), (b, a, False)):
            if kind < 0.1:
                ops[r].append(coll("barrier", 1))
                continue
            if rng.random() < 0.3:
                continue  # leave it unmatched sometimes
            style = rng.random()
            name = "send" if send else "recv"
            if style < 0.35:
                ops[r].append(p2p(name, peer, 1))
            elif style < 0.7:
                ops[r].append(p2p("i" + name, peer, 1, handle=handles[r]))
                open_handles[r].append(handles[r])
                handles[r] += 1
            else:
                ents = [p2p("i" + name, peer, 1, handle=handles[r], top=False)]
                open_handles[r].append(handles[r])
                handles[r] += 1
                ops[r].append(batch(1, *ents))
        for r in range(n):
            while open_handles[r] and rng.random() < 0.5:
                ops[r].append(wait(open_handles[r].pop(rng.randrange(len(open_handles[r]))), 2))
    for r in range(n):
        rng.shuffle(open_handles[r])
        ops[r].extend(wait(h, 3) for h in open_handles[r])
        if ops[r] and rng.random() < 0.1 and any(o["op"] == "wait" for o in ops[r]):
            ops[r].append(next(o for o in ops[r] if o["op"] == "wait"))  # a second wait
    # collectives only where every rank has the same count (else the naive oracle has no group to ask)
    return program(*ops)


def test_replay_agrees_with_a_naive_interpreter_and_models_are_ordered():
    rng = random.Random(13)
    stuck = {m: 0 for m in MODELS}
    for _ in range(300):
        doc = random_program(rng)
        got = terminates(doc)
        for m in MODELS:
            assert got[m] == naive_terminates(doc, m), (m, json.dumps(doc))
            stuck[m] += not got[m]
        double = any(sum(1 for o in rp["ops"] if o == w) > 1 for rp in doc["ranks"]
                     for w in rp["ops"] if w["op"] == "wait")
        # the order of the models: nccl => nccl-pairs => gloo => eager (a second wait: gloo only)
        if got["nccl"]:
            assert got["nccl-pairs"]
        if got["nccl-pairs"] and not double:
            assert got["gloo"]
        if got["gloo"]:
            assert got["eager"]
    assert all(stuck[m] >= 20 for m in ("nccl", "gloo")), stuck  # the sample has deadlocks


def test_fast_replay_takes_the_same_steps_as_the_explaining_one():
    """``program.fast`` (what check runs first) and ``program.replay`` agree on every model:
    the same verdict, and where it terminates the same event count and witness
    order (both depend on the order ranks are resumed in)."""
    from verifier.check.certificate.program import check_program_certificate
    from verifier.check.program.fast import Fast
    from verifier.check.program.plan import plan
    from verifier.check.program.replay import replay
    from verifier.format.schedule_program import program_from_schedule
    from verifier.generators import FAMILIES, generate

    rng = random.Random(7)
    progs = [program_from_dict(random_program(rng)) for _ in range(400)]
    progs += [program_from_schedule(generate(f, R, M)) for f in FAMILIES for R, M in ((2, 4), (4, 8))]
    seen = {"terminates": 0, "stuck": 0}
    for p in progs:
        pl = plan(p)
        fast = Fast(p, pl)
        assert fast.usable
        for rules in PROGRAM_MODELS.values():
            ref, got = replay(p, rules, pl), fast.replay(rules, pl.partner, pl.is_send)
            assert (got is not None) == ref.terminates, (rules.name, p)
            if got is not None:
                # the same outcome and witness order; the fast one also says when each unit completed
                assert dataclasses.replace(got, certificate=None) == dataclasses.replace(ref, certificate=None)
                assert got.certificate.returns() == ref.certificate.returns(), rules.name
                assert got.certificate.completions is not None
                assert check_program_certificate(p, rules.name, got.certificate) == (True, ""), rules.name
            seen["terminates" if ref.terminates else "stuck"] += 1
    assert seen["terminates"] >= 400 and seen["stuck"] >= 400, seen


def test_models_left_to_the_order_agree_with_their_replays():
    """``check`` replays the verdict's model and leaves a weaker one to the order
    between models when the stricter terminates (``implied_by``); on random
    programs (second waits included) every such outcome equals that model's
    own replay, and a second wait makes gloo replayed, not implied."""
    rng = random.Random(31)
    implied = replayed_gloo = 0
    for _ in range(300):
        p = program_from_dict(random_program(rng))
        every = {o.model: o.terminates for o in check_program(p, "all").models}
        for chosen in PROGRAM_MODELS:
            r = check_program(p, chosen)
            for o in r.models:
                assert o.terminates == every[o.model], (chosen, o.model, p)
                if o.implied_by:
                    implied += 1
                    src = r.outcome(o.implied_by)  # a stricter model that was replayed and terminates
                    assert o.terminates and o.certificate is None and src.terminates and not src.implied_by
                    assert MODELS.index(src.model) < MODELS.index(o.model)
                elif chosen == "nccl" and o.model == "gloo" and every["nccl"]:
                    replayed_gloo += 1  # a second wait: the chain stops before gloo
    assert implied >= 200 and replayed_gloo >= 3, (implied, replayed_gloo)


def test_columns_hold_the_ops_as_written():
    """``Program.columns`` against the op objects, op by op and entry by entry."""
    from verifier.program import BATCH, BLOCKS, COLLECTIVE, OTHER, P2P_OPS, POLL, POSTS, WAIT, BatchP2P

    rng = random.Random(37)
    for _ in range(100):
        p = program_from_dict(random_program(rng))
        c = p.columns
        g = e = 0
        for rp in p.ranks:
            assert c.off[rp.rank] == g
            for k, op in enumerate(rp.ops):
                want = {"send": BLOCKS, "recv": BLOCKS, "isend": POSTS, "irecv": POSTS, "batch": BATCH,
                        "collective": COLLECTIVE, "wait": WAIT, "compute": OTHER}.get(op.op, POLL)
                assert (c.code[g], c.rank[g], c.ops[g]) == (want, rp.rank, op)
                assert c.handle[g] == (op.handle if op.op in ("wait", "is_completed") else -1)
                assert (g in c.not_returned) is (not op.returned)
                for j, x in enumerate(op.ops if isinstance(op, BatchP2P) else (op,) if op.op in P2P_OPS else ()):
                    assert c.entries[e] is x and c.e_op[e] == g
                    assert c.e_sub[e] == (j if isinstance(op, BatchP2P) else -1)
                    assert (c.e_send[e], c.e_peer[e], c.e_group[e]) == (x.is_send, x.peer, x.group)
                    assert c.e_handle[e] == (-1 if x.handle is None else x.handle)
                    e += 1
                g += 1
        assert g == len(c.code) and e == len(c.entries)


def test_an_empty_batch_built_through_the_api_is_checked_not_crashed():
    """Files cannot hold an empty batch_isend_irecv (the schema's minItems), but a
    Program built in Python can; every model and the certificate checker cope."""
    from verifier.program import BatchP2P

    p = program_from_dict(program([p2p("send", 1, 1)], [p2p("recv", 0, 2)]))
    ranks = (dataclasses.replace(p.ranks[0], ops=(BatchP2P(()),) + p.ranks[0].ops),) + p.ranks[1:]
    r = check_program(dataclasses.replace(p, ranks=ranks), "all")
    assert r.certificate == "accepted" and r.verdict is Verdict.VERIFIED
    assert all(o.terminates for o in r.models)
