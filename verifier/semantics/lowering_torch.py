"""PyTorch's lowering: where torch.distributed.pipelining's runtime posts its sends and receives.

What it is: ``torch_lower(s)`` turns a compute-only schedule into the schedule
PyTorch's runtime runs for it, by the rule of ``_add_send_recv`` in
torch/distributed/pipelining/schedules.py (torch 2.13), restated here so that
the checker can prove what torch will post without importing torch:

- the ranks are visited round-robin (0, 1, ..., then again); each visit looks at
  the rank's next compute only;
- that compute may be placed when its input is there: an F whose previous stage
  exists needs its RECV_F or the previous stage's F already placed on this rank;
  a B or I whose next stage exists needs its RECV_B or the next stage's B or I
  already placed on this rank; W always; an OVERLAP needs both halves;
- placing a compute appends it to its rank, then, for each compute whose output
  crosses to another rank, its send right after it on this rank and the
  matching receive at the end of the receiving rank's list, at that moment;
- a visit that cannot place the compute moves on to the next rank; a round in
  which no rank places anything is torch's "Malformed compute schedule" error.

Every op is a plain ``Comm`` (torch posts each as its own ``batch_isend_irecv``
and waits on a receive right before the compute that consumes it), the form in
which ``verifier.format.csvio`` reads torch's own lowered CSVs.
``tests/test_lowering_torch.py`` holds this against torch's ``_add_send_recv``
for every schedule class torch ships.

The neighbours are the schedule's route neighbours (verifier.semantics.routes);
torch numbers stages 0..N-1 on one route, so a schedule with more than one
route is refused. ``_defer_recv_ops`` (torch's opt-in ``defer_pp_recv``) is not
restated.

Not covered: this project's lowering (verifier.semantics.lowering), FSDP
actions (UNSHARD, RESHARD, REDUCE_GRAD never wait for data in torch's rule, so
leaving them out changes no op's place relative to another).
"""

from __future__ import annotations

from verifier.errors import ScheduleError
from verifier.ir import Comm, CommKind, Compute, ComputeKind, Schedule, action_text, computes_of
from verifier.semantics.routes import routes_of

_F, _B, _I = ComputeKind.F, ComputeKind.B, ComputeKind.I

# the lowerings ``check`` takes: this project's (verifier.semantics.lowering) and torch's
LOWERINGS = ("ppverify", "torch")


def torch_lower(s: Schedule) -> Schedule:
    """The schedule PyTorch's runtime posts for compute-only ``s`` (module
    docstring). ``ScheduleError`` for a schedule with communication, one with
    more than one route, or one torch's rule cannot lower (naming each rank's
    waiting compute)."""
    if not s.is_compute_only:
        raise ScheduleError("PyTorch's lowering takes a compute-only schedule; this one already "
                            "places its communication", "lowering")
    if len(s.routes) > 1:
        raise ScheduleError(f"PyTorch's lowering numbers stages 0..N-1 on one route; this schedule "
                            f"has {len(s.routes)} routes", "lowering")
    nb = routes_of(s)
    out: list[list] = [[] for _ in range(s.num_ranks)]
    placed: list[set] = [set() for _ in range(s.num_ranks)]
    pos = [0] * s.num_ranks

    def crosses(c: Compute) -> Comm | None:
        """The send ``c``'s output needs, if its consumer is on another rank."""
        if c.kind is _F:
            other = nb.next.get(c.stage)
            kind = CommKind.SEND_F
        elif c.kind is _B or c.kind is _I:
            other = nb.prev.get(c.stage)
            kind = CommKind.SEND_B
        else:
            return None
        if other is None or nb.rank_of[other] == nb.rank_of[c.stage]:
            return None
        return Comm(kind, c.stage, c.mb)

    while any(pos[r] < len(s.actions[r]) for r in range(s.num_ranks)):
        progress = False
        for r in range(s.num_ranks):
            if pos[r] >= len(s.actions[r]):
                continue
            a = s.actions[r][pos[r]]
            subs = computes_of(a)
            if not all(_ready(c, placed[r], nb) for c in subs):
                continue
            out[r].append(a)
            for c in subs:
                placed[r].add((c.kind, c.stage, c.mb))
                send = crosses(c)
                if send is not None:
                    out[r].append(send)
                    fwd = send.kind is CommKind.SEND_F
                    other = (nb.next if fwd else nb.prev)[c.stage]
                    recv = Comm(CommKind.RECV_F if fwd else CommKind.RECV_B, other, c.mb)
                    dst = nb.rank_of[other]
                    out[dst].append(recv)
                    placed[dst].add((recv.kind, recv.stage, recv.mb))
            pos[r] += 1
            progress = True
        if not progress:
            raise ScheduleError(_stuck(s, pos), "lowering")
    return s.with_actions([tuple(acts) for acts in out])


def _ready(c: Compute, placed: set, nb) -> bool:
    """Whether torch's rule may place compute ``c`` on a rank that has placed ``placed``."""
    if c.kind is _F:
        p = nb.prev.get(c.stage)
        return p is None or (CommKind.RECV_F, c.stage, c.mb) in placed or (_F, p, c.mb) in placed
    if c.kind is _B or c.kind is _I:
        n = nb.next.get(c.stage)
        return (n is None or (CommKind.RECV_B, c.stage, c.mb) in placed
                or (_I, n, c.mb) in placed or (_B, n, c.mb) in placed)
    return True


def _stuck(s: Schedule, pos: list[int]) -> str:
    waiting = "; ".join(f"rank {r} step {pos[r]} {action_text(s.actions[r][pos[r]])}"
                        for r in range(s.num_ranks) if pos[r] < len(s.actions[r]))
    return ("PyTorch's lowering (_add_send_recv) cannot place the communication and would raise "
            f"'Malformed compute schedule': no rank's next compute has its input: {waiting}")
