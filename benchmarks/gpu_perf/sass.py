"""SASS text (cuobjdump -sass) -> instructions by class, and the loops they sit in.

A loop is a backward branch: `BRA target` at address a with target <= a encloses [target, a].
Loops nest by containment. The model (model.py) multiplies a loop's body by its trip count; the
trip counts come from the kernel's source (the caller says which loop does what), never from here.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Za-z0-9_.]*)\s*([^;]*);")
_FUNC = re.compile(r"Function : (\S+)")

# Instruction classes, by opcode (the part before the first '.'). Sources: NVIDIA's CUDA Binary
# Utilities documentation, "Instruction Set Reference" tables for sm_80/sm_90.
CLASSES = {
    "tensor": {"HMMA", "IMMA", "HGMMA", "IGMMA", "QGMMA", "BMMA", "DMMA"},
    "ldsm": {"LDSM"},  # ldmatrix: shared -> tensor-core fragments
    "shared": {"LDS", "STS", "ATOMS", "LDSM"},
    # Generic LD/ST resolve to shared or global by address; in the kernels modelled here they are
    # nvcc's bf16 WMMA fragment loads, which read shared memory, so they count as shared traffic.
    "generic": {"LD", "ST"},
    "global": {"LDG", "STG", "LDGSTS", "RED", "ATOM", "ATOMG", "UBLKCP", "UTMALDG", "UTMASTG", "LDGDEPBAR"},
    "fp": {"FADD", "FMUL", "FFMA", "FMNMX", "FSETP", "FSEL", "HADD2", "HMUL2", "HFMA2", "HMNMX2", "F2F", "F2FP",
           "MUFU", "FCHK", "FSET", "I2F", "F2I", "DADD", "DMUL", "DFMA", "DSETP"},
    "branch_sync": {"BRA", "BAR", "BSSY", "BSYNC", "EXIT", "RET", "CALL", "WARPSYNC", "DEPBAR", "SYNCS", "BPT",
                    "YIELD", "NANOSLEEP", "MEMBAR", "FENCE", "ERRBAR", "CCTL", "ELECT", "VOTE", "VOTEU", "WARPGROUP",
                    "BREAK", "SHFL"},
}
# Everything else (IADD3, IMAD, LEA, SHF, LOP3, ISETP, MOV, SEL, PRMT, S2R, LDC, U* uniform ops, ...)
# is integer/address work: it costs an issue slot and nothing else in this model.


def op_class(opcode: str) -> str:
    base = opcode.split(".")[0]
    for name in ("tensor", "ldsm", "shared", "generic", "global", "fp", "branch_sync"):
        if base in CLASSES[name]:
            return name
    return "int"


@dataclass
class Instr:
    addr: int
    opcode: str  # full, with modifiers: HMMA.16816.F32.BF16
    operands: str

    @property
    def cls(self) -> str:
        return op_class(self.opcode)


@dataclass
class Loop:
    start: int  # address of the branch target (the loop head)
    end: int  # address of the backward branch
    children: list["Loop"] = field(default_factory=list)

    def contains(self, addr: int) -> bool:
        return self.start <= addr <= self.end


@dataclass
class Function:
    name: str
    instrs: list[Instr]
    loops: list[Loop]  # outermost loops, each with its nested children

    def counts(self, lo: int = 0, hi: int | None = None, exclude: tuple[Loop, ...] = ()) -> Counter:
        """Instruction classes (and 'all') in [lo, hi], leaving out the instructions of `exclude`."""
        hi = self.instrs[-1].addr if hi is None else hi
        out: Counter = Counter()
        for i in self.instrs:
            if lo <= i.addr <= hi and not any(l.contains(i.addr) for l in exclude):
                out[i.cls] += 1
                out["all"] += 1
                if i.cls == "ldsm":
                    out["shared"] += 1
        return out

    def body(self, loop: Loop) -> Counter:
        """One iteration of `loop`, without its nested loops (those are counted with their trips)."""
        return self.counts(loop.start, loop.end, tuple(loop.children))

    def all_loops(self) -> list[Loop]:
        out, todo = [], list(self.loops)
        while todo:
            l = todo.pop(0)
            out.append(l)
            todo.extend(l.children)
        return sorted(out, key=lambda l: l.start)

    def opcodes(self, lo: int = 0, hi: int | None = None) -> Counter:
        hi = self.instrs[-1].addr if hi is None else hi
        return Counter(i.opcode for i in self.instrs if lo <= i.addr <= hi)


def _nest(spans: list[tuple[int, int]]) -> list[Loop]:
    # Several backward branches to one head are one loop (continue paths): keep the farthest end.
    heads: dict[int, int] = {}
    for s, e in spans:
        heads[s] = max(e, heads.get(s, e))
    roots: list[Loop] = []
    stack: list[Loop] = []
    for s, e in sorted(heads.items(), key=lambda x: (x[0], -x[1])):
        loop = Loop(s, e)
        while stack and not (stack[-1].start <= s and e <= stack[-1].end):
            stack.pop()
        (stack[-1].children if stack else roots).append(loop)
        stack.append(loop)
    return roots


def parse(text: str) -> dict[str, Function]:
    """Every function of a cuobjdump -sass listing, by (mangled) name."""
    funcs: dict[str, Function] = {}
    name, instrs = None, []

    def close():
        if name is not None:
            spans = []
            for i in instrs:
                if i.opcode.split(".")[0] == "BRA":
                    target = re.search(r"0x([0-9a-f]+)", i.operands)
                    # target < addr: a loop. (A branch to itself is the trap after EXIT that
                    # ends every function: never taken.)
                    if target and int(target.group(1), 16) < i.addr:
                        spans.append((int(target.group(1), 16), i.addr))
            funcs[name] = Function(name, instrs, _nest(spans))

    for line in text.splitlines():
        f = _FUNC.search(line)
        if f:
            close()
            name, instrs = f.group(1), []
            continue
        m = _LINE.search(line)
        if m and name is not None:
            instrs.append(Instr(int(m.group(1), 16), m.group(3), m.group(4).strip()))
    close()
    return funcs


def inside(inner: Loop, outer: Loop) -> bool:
    """Whether `inner` is a loop nested in `outer` (a loop is not inside itself)."""
    return inner is not outer and outer.start <= inner.start and inner.end <= outer.end


def without_fallbacks(func: Function) -> Function:
    """`func` with only the loops of its own code: the backward branches before its last EXIT.
    After it sit the shuffles' divergence fallbacks (BRA.DIV targets), which branch back into the
    loops; their spans overlap the real loops (or stretch them, where they share a head)."""
    last_exit = max(i.addr for i in func.instrs if i.opcode.split(".")[0] == "EXIT")
    spans = []
    for i in func.instrs:
        target = re.search(r"0x([0-9a-f]+)", i.operands) if i.opcode.split(".")[0] == "BRA" else None
        if target and int(target.group(1), 16) < i.addr < last_exit:
            spans.append((int(target.group(1), 16), i.addr))
    return Function(func.name, func.instrs, _nest(spans))


# Bytes a warp moves per instruction, by width modifier (32 lanes x the element): a plain 32-bit
# access is 128 B. LDSM .x4/.x2/.x1 move 4/2/1 8x8 matrices of 16-bit values (512/256/128 B).
_WIDTH = {"128": 512, "64": 256, "U16": 64, "S16": 64, "U8": 32, "S8": 32}


def access_bytes(opcode: str) -> int:
    parts = opcode.split(".")
    if parts[0] == "LDSM":
        return {"4": 512, "2": 256}.get(parts[-1], 128)
    for p in parts[1:]:
        if p in _WIDTH:
            return _WIDTH[p]
    return 128


def tensor_fma(opcode: str) -> int:
    """Multiply-adds of one tensor-core instruction, per warp: HMMA.16816 is m16n8k16 (2,048);
    HMMA.1688 m16n8k8; HGMMA.64xNx16 is one warpgroup's m64nNk16, a quarter per warp."""
    parts = opcode.split(".")
    if parts[0] == "HMMA":
        m, n, k = {"16816": (16, 8, 16), "1688": (16, 8, 8), "884": (8, 8, 4)}[parts[1]]
        return m * n * k
    if parts[0] == "HGMMA":
        m, n, k = (int(x) for x in parts[1].split("x"))
        return m * n * k // 4
    return 0


def wgmma_shared_bytes(opcode: str, operands: str) -> int:
    """Shared bytes a wgmma reads, per warp (a quarter of the warpgroup's): B (N x 16, 16-bit)
    always comes from shared memory through a descriptor; A (64 x 16) too when its operand is a
    descriptor (`gdesc`) rather than registers."""
    m, n, k = (int(x) for x in opcode.split(".")[1].split("x"))
    a_from_shared = operands.split(",")[1].strip().startswith("gdesc")
    return ((m * k * 2 if a_from_shared else 0) + n * k * 2) // 4


def totals(func: Function, lo: int, hi: int, exclude: tuple[Loop, ...] = ()) -> dict[str, int]:
    """Per warp over [lo, hi] (without `exclude`): instructions by class, tensor FMAs, shared
    bytes (LDS/STS/LDSM/LDGSTS's shared side) and global bytes requested (LDG/STG/LDGSTS)."""
    out = dict(func.counts(lo, hi, exclude))
    fma = smem = gmem = 0
    for i in func.instrs:
        if not (lo <= i.addr <= hi) or any(l.contains(i.addr) for l in exclude):
            continue
        base = i.opcode.split(".")[0]
        fma += tensor_fma(i.opcode)
        if base in ("LDS", "STS", "LDSM", "LDGSTS", "LD", "ST"):
            smem += access_bytes(i.opcode)
        elif base == "HGMMA":
            smem += wgmma_shared_bytes(i.opcode, i.operands)
        if base in ("LDG", "STG", "LDGSTS"):
            gmem += access_bytes(i.opcode)
    out.update(fma=fma, smem_bytes=smem, gmem_bytes=gmem, hgmma=sum(1 for i in func.instrs
               if lo <= i.addr <= hi and i.opcode.startswith("HGMMA") and not any(l.contains(i.addr) for l in exclude)))
    return out


def summary(func: Function) -> dict:
    """A single-loop Triton kernel as the model needs it: the straight-line code (run once per
    program) and the top-level loops' bodies with their nested loops (run once per trip)."""
    end = func.instrs[-1].addr
    straight = totals(func, 0, end, tuple(func.loops))
    loop: dict[str, int] = {}
    for l in func.loops:
        for k, v in totals(func, l.start, l.end).items():
            loop[k] = loop.get(k, 0) + v
    return {"straight": straight, "loop": loop, "loops": len(func.loops)}
