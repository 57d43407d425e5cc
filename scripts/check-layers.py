#!/usr/bin/env python3
"""Holds the Rust crates to their architecture (docs/architecture.md).

Fails, naming the modules, when:
  - modules import each other in a circle (file by file, tests left out);
  - a layer imports one above it (the order per crate is LAYERS below);
  - a file has more than MAX_LINES lines of non-test code and does not say
    at its top why (a line starting with `//! Long because`);
  - a folder's `mod.rs` is more than its face: doc comments, then only
    `mod` declarations and `pub use` re-exports.

`--report` prints, per crate, the modules per folder, the deepest import
chain and the largest files: the figures docs/architecture.md quotes.

It reads imports as text: `use` trees (nested braces included) and inline
`crate::`/`super::`/`self::` paths, each resolved to the deepest module
that exists. Test code (`#[cfg(test)]` modules, inline or in files) is
left out: tests may import anything.
"""

import os
import re
import sys
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CRATES = {
    "core": "core/src",
    "decide": "decide/src",
    "filter": "filter/src",
    "controller": "controller/src",
}

# Bottom to top: a layer may import only those before it in its list.
# Modules of a crate not listed are not held to an order (only to no circle).
LAYERS = {
    "decide": ["counts", "spec", "analysis", "engine", "simulate"],
    "controller": ["tls", "auth", "store", "metrics", "notify", "service", "sync", "fleet", "api", "cli"],
}

MAX_LINES = 600

# What a face (a folder's mod.rs) may hold besides comments: module
# declarations, re-exports (on one line or several), test-only attributes.
FACE_LINE = re.compile(r"^\s*(#\[cfg\(test\)\]|(pub(\([a-z]+\))?\s+)?mod\s+\w+;|pub(\([a-z]+\))?\s+use\s.*|[\w:,{}\s]*[,{}];?)\s*$")
LONG_REASON = "//! Long because"


def strip_comments(text):
    """Removes // comments and string literals' contents, keeping lines."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = '"' + hashes
            j = text.find(end, i + 2 + len(hashes))
            j = n if j < 0 else j + len(end)
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:i + 4]):
            m = re.match(r"'(\\.|[^\\'])'", text[i:i + 4])
            out.append("' '")
            i += len(m.group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


CFG_TEST_MOD = re.compile(r"#\[cfg\(test\)\]\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*([;{])")


def drop_test_code(code):
    """Removes inline `#[cfg(test)] mod x { … }`; returns the code and the
    names of test modules declared as files (`#[cfg(test)] mod x;`)."""
    test_files = set()
    while True:
        m = CFG_TEST_MOD.search(code)
        if not m:
            return code, test_files
        if m.group(2) == ";":
            test_files.add(m.group(1))
            code = code[:m.start()] + "\n" * code.count("\n", m.start(), m.end()) + code[m.end():]
            continue
        depth, j = 1, m.end()
        while j < len(code) and depth:
            depth += {"{": 1, "}": -1}.get(code[j], 0)
            j += 1
        code = code[:m.start()] + "\n" * code.count("\n", m.start(), j) + code[j:]


def module_of(rel):
    """`a/b.rs` -> ("a", "b"); `a/mod.rs` -> ("a",); `lib.rs` -> ()."""
    parts = rel[:-3].split("/")
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return tuple(parts)


def use_paths(tree, prefix=()):
    """Every full path a `use` tree names: `a::{b, c::{d, e}}` -> a::b, a::c::d, a::c::e."""
    tree = tree.strip()
    if not tree:
        return []
    depth, start, parts = 0, 0, []
    # Split at the top-level `::{`, if any.
    m = None
    for i, ch in enumerate(tree):
        if ch == "{":
            if depth == 0:
                m = i
                break
            depth += 1
    if m is None:
        path = [p.strip() for p in tree.split(" as ")[0].split("::") if p.strip()]
        if path and path[-1] == "*":
            path = path[:-1]
        if path and path[-1] == "self":
            path = path[:-1]
        return [prefix + tuple(path)]
    head = [p for p in tree[:m].split("::") if p.strip()]
    inner = tree[m + 1:tree.rindex("}")]
    out, depth, start = [], 0, 0
    for i, ch in enumerate(inner + ","):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            out += use_paths(inner[start:i], prefix + tuple(p.strip() for p in head))
            start = i + 1
    if not out:
        out.append(prefix + tuple(head))
    return out


class Crate:
    def __init__(self, name, src):
        self.name = name
        self.src = os.path.join(ROOT, src)
        self.files = {}  # module path -> relative file
        self.code = {}
        self.lines = {}  # relative file -> non-test code lines
        self.long_ok = set()
        self.fat_faces = []
        tests = set()
        for dirpath, _, names in os.walk(self.src):
            for f in names:
                if not f.endswith(".rs"):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, f), self.src)
                if rel == "main.rs" or rel.startswith("bin/"):
                    continue
                text = open(os.path.join(dirpath, f), encoding="utf-8").read()
                code, test_files = drop_test_code(strip_comments(text))
                mod = module_of(rel)
                for t in test_files:
                    tests.add(mod + (t,))
                self.files[mod] = rel
                self.code[mod] = code
                self.lines[rel] = sum(1 for line in code.splitlines() if line.strip())
                if any(line.startswith(LONG_REASON) for line in text.splitlines()[:30]):
                    self.long_ok.add(rel)
                if f == "mod.rs":
                    extra = [line for line in strip_comments(text).splitlines() if line.strip() and not FACE_LINE.match(line)]
                    if extra:
                        self.fat_faces.append((rel, extra[0].strip()))
        for t in tests:
            for mod in list(self.files):
                if mod[:len(t)] == t:
                    del self.lines[self.files[mod]]
                    del self.files[mod]
                    del self.code[mod]
        self.edges = defaultdict(set)
        for mod, code in self.code.items():
            for path in self.references(mod, code):
                target = self.resolve(path)
                if target is not None and target != mod and target in self.files:
                    self.edges[mod].add(target)

    def children(self, mod):
        return {m[-1] for m in self.files if len(m) == len(mod) + 1 and m[:len(mod)] == mod}

    def references(self, mod, code):
        # Inside an inline `mod x { … }` (a macro's too), `super` is the file's module.
        spans = []
        for m in re.finditer(r"\bmod\s+\$?(\w+)\s*\{", code):
            depth, j = 1, m.end()
            while j < len(code) and depth:
                depth += {"{": 1, "}": -1}.get(code[j], 0)
                j += 1
            spans.append((m.end(), j))

        def base(at):
            return mod + ("<inline>",) * sum(1 for a, b in spans if a <= at < b)

        for m in re.finditer(r"\buse\s+([^;]+);", code):
            for path in use_paths(m.group(1)):
                yield self.absolute(base(m.start()), path)
        for m in re.finditer(r"(?<![\w:])((?:crate|super|self)(?:::\w+)+)", code):
            yield self.absolute(base(m.start()), tuple(m.group(1).split("::")))

    def absolute(self, mod, path):
        if not path:
            return None
        if path[0] == "crate":
            return path[1:]
        if path[0] in ("super", "self"):
            base = list(mod)
            rest = list(path)
            while rest and rest[0] in ("super", "self"):
                if rest.pop(0) == "super":
                    if not base:
                        return None
                    base.pop()
            return tuple(base + rest)
        if path[0] in self.children(mod):
            return mod + path
        return None  # another crate, or std

    def resolve(self, path):
        if path is None:
            return None
        for k in range(len(path), -1, -1):
            if path[:k] in self.files:
                return path[:k]
        return None

    def name_of(self, mod):
        return self.files[mod]

    def cycles(self):
        return [c for c in scc(self.files, self.edges) if len(c) > 1]

    def upward(self):
        order = LAYERS.get(self.name)
        if not order:
            return []
        rank = {layer: i for i, layer in enumerate(order)}
        bad = []
        for a, targets in self.edges.items():
            for b in targets:
                la, lb = (a[:1] or ("",))[0], (b[:1] or ("",))[0]
                if la in rank and lb in rank and la != lb and rank[lb] > rank[la]:
                    bad.append((a, b))
        return sorted(bad)

    def deepest_chain(self, through_faces=False):
        edges = self.edges
        nodes = self.files
        if through_faces:
            # A face only re-exports: importing through it is importing what it names.
            faces = {m for m, rel in self.files.items() if rel.endswith("mod.rs") or rel == "lib.rs"}

            def ends(m, seen):
                out = set()
                for t in self.edges[m]:
                    if t in faces and t not in seen:
                        out |= ends(t, seen | {t})
                    elif t not in faces:
                        out.add(t)
                return out

            nodes = {m: r for m, r in self.files.items() if m not in faces}
            edges = defaultdict(set, {m: ends(m, {m}) for m in nodes})
        comps = scc(nodes, edges)
        comp_of = {m: i for i, c in enumerate(comps) for m in c}
        memo = {}

        def longest(i):
            if i in memo:
                return memo[i]
            memo[i] = [i]
            best = []
            for m in comps[i]:
                for t in edges[m]:
                    j = comp_of[t]
                    if j != i:
                        cand = longest(j)
                        if len(cand) > len(best):
                            best = cand
            memo[i] = [i] + best
            return memo[i]

        chain = max((longest(i) for i in range(len(comps))), key=len, default=[])
        return [self.files[sorted(comps[i])[0]] for i in chain]


def scc(nodes, edges):
    """Tarjan's strongly connected components."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(comp)

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def main():
    report = "--report" in sys.argv
    failures = []
    for name, src in CRATES.items():
        crate = Crate(name, src)
        for comp in crate.cycles():
            files = sorted(crate.name_of(m) for m in comp)
            ties = [
                f"{crate.name_of(a)} -> {crate.name_of(b)}"
                for a in sorted(comp)
                for b in sorted(crate.edges[a])
                if b in comp
            ]
            failures.append(f"{src}: import circle among {', '.join(files)} ({'; '.join(ties)})")
        for a, b in crate.upward():
            failures.append(
                f"{src}: {crate.name_of(a)} imports {crate.name_of(b)}, a layer above its own "
                f"(order: {' < '.join(LAYERS[name])})"
            )
        for rel, line in crate.fat_faces:
            failures.append(
                f"{src}/{rel}: a folder's mod.rs is its face (docs, `mod`, `pub use`), but it has: {line}"
            )
        for rel, n in sorted(crate.lines.items()):
            if n > MAX_LINES and rel not in crate.long_ok:
                failures.append(
                    f"{src}/{rel}: {n} lines of non-test code (over {MAX_LINES}); split it, "
                    f"or say why at its top with '{LONG_REASON} …'"
                )
        if report:
            folders = defaultdict(int)
            for rel in crate.lines:
                folders[os.path.dirname(rel) or "."] += 1
            chain = crate.deepest_chain()
            flat = crate.deepest_chain(through_faces=True)
            largest = sorted(crate.lines.items(), key=lambda kv: -kv[1])[:3]
            print(f"{src}: {len(crate.lines)} modules")
            print("  modules per folder: " + ", ".join(f"{d or '.'} {n}" for d, n in sorted(folders.items())))
            print(f"  deepest import chain ({len(chain)} files): " + " -> ".join(chain))
            print(f"  the same, seeing through faces ({len(flat)} files): " + " -> ".join(flat))
            print("  largest (non-test lines): " + ", ".join(f"{r} {n}" for r, n in largest))
    for f in failures:
        print(f"check-layers: {f}", file=sys.stderr)
    if failures:
        sys.exit(1)
    if not report:
        print(f"check-layers: no import circle, no upward import, no file over {MAX_LINES} lines unexplained "
              f"({', '.join(CRATES)})")


if __name__ == "__main__":
    main()
