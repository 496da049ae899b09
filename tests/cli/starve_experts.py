#!/usr/bin/env python3
"""Makes a Strata checkpoint whose routers never choose some experts, for the MoE tests.

    starve_experts.py CKPT_DIR FIRST_EXPERT

Sets every `*.moe.router_bias` (sigmoid routers: the bias steers selection only) to -1000 for
experts FIRST_EXPERT.. and 0 for the others, in place, and rewrites the recorded CRC-32C of each
changed slice and of the manifest, so the checkpoint still verifies. Plain Python.
"""
import array
import json
import os
import sys


def crc32c(data, crc=0):
    table = crc32c.table
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


crc32c.table = []
for i in range(256):
    c = i
    for _ in range(8):
        c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    crc32c.table.append(c)


TAIL = ',\n "manifest_crc32c": "'


def main():
    ckpt, first = sys.argv[1], int(sys.argv[2])
    path = os.path.join(ckpt, "manifest.json")
    text = open(path).read()
    manifest = json.loads(text)
    lines = text.split("\n")
    changed = 0
    for name, rec in manifest["tensors"].items():
        if not name.endswith(".moe.router_bias"):
            continue
        n = rec["shape"][0]
        bias = array.array("f", [0.0 if e < first else -1000.0 for e in range(n)]).tobytes()
        for s in rec["slices"]:
            begin, end = s["byte_range"]
            lo = s.get("offset", [0])[0]
            part = bias[4 * lo:4 * lo + (end - begin)]
            with open(os.path.join(ckpt, s["file"]), "r+b") as f:
                f.seek(begin)
                f.write(part)
            # The slice's line in the manifest (one line per slice) gets the new checksum.
            key = '"key":' + json.dumps(s["key"])
            for i, line in enumerate(lines):
                if key in line and '"file":' + json.dumps(s["file"]) in line:
                    lines[i] = line.replace('"crc32c":"%s"' % s["crc32c"], '"crc32c":"%s"' % format(crc32c(part), "08x"))
            changed += 1
    if changed == 0:
        raise SystemExit(f"{ckpt}: no router_bias tensors (a softmax router?)")
    # The manifest's own checksum: the CRC-32C of the text before its last field.
    text = "\n".join(lines)
    body = text[:text.rindex(TAIL)]
    text = body + TAIL + format(crc32c(body.encode()), "08x") + '"\n}\n'
    with open(path, "w") as f:
        f.write(text)
    print(f"starved experts >= {first} in {changed} router biases")


if __name__ == "__main__":
    main()
