"""BLAKE3 (hash mode, 32-byte digest) in plain Python.

Used for the small texts the torch layer hashes (a graph's canonical text,
the toolchain fingerprint) when the extension does not expose the C hasher
as _native.blake3. Both give the same digests; this one is slow (about a
millisecond per KiB), which is fine for texts of a few KiB hashed once per
compiled graph. Checked against b3sum in tests/python/test_torch_api.py.
"""

_MASK = 0xFFFFFFFF
_IV = (0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A,
       0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19)
_PERM = (2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8)
_CHUNK_START, _CHUNK_END, _PARENT, _ROOT = 1, 2, 4, 8
_BLOCK, _CHUNK = 64, 1024


def _g(s, a, b, c, d, x, y):
    s[a] = (s[a] + s[b] + x) & _MASK
    t = s[d] ^ s[a]
    s[d] = ((t >> 16) | (t << 16)) & _MASK
    s[c] = (s[c] + s[d]) & _MASK
    t = s[b] ^ s[c]
    s[b] = ((t >> 12) | (t << 20)) & _MASK
    s[a] = (s[a] + s[b] + y) & _MASK
    t = s[d] ^ s[a]
    s[d] = ((t >> 8) | (t << 24)) & _MASK
    s[c] = (s[c] + s[d]) & _MASK
    t = s[b] ^ s[c]
    s[b] = ((t >> 7) | (t << 25)) & _MASK


def _compress(cv, m, counter, block_len, flags):
    s = list(cv) + list(_IV[:4]) + [counter & _MASK,
                                     (counter >> 32) & _MASK,
                                     block_len, flags]
    m = list(m)
    for r in range(7):
        _g(s, 0, 4, 8, 12, m[0], m[1])
        _g(s, 1, 5, 9, 13, m[2], m[3])
        _g(s, 2, 6, 10, 14, m[4], m[5])
        _g(s, 3, 7, 11, 15, m[6], m[7])
        _g(s, 0, 5, 10, 15, m[8], m[9])
        _g(s, 1, 6, 11, 12, m[10], m[11])
        _g(s, 2, 7, 8, 13, m[12], m[13])
        _g(s, 3, 4, 9, 14, m[14], m[15])
        if r < 6:
            m = [m[i] for i in _PERM]
    return [s[i] ^ s[i + 8] for i in range(8)]


def _words(block):
    block = block + bytes(_BLOCK - len(block))
    return [int.from_bytes(block[i:i + 4], "little")
            for i in range(0, _BLOCK, 4)]


def _chunk_output(data, counter):
    """The last block of a chunk, not yet compressed: (cv, words,
    counter, len, flags)."""
    cv = _IV
    n_blocks = max(1, (len(data) + _BLOCK - 1) // _BLOCK)
    for i in range(n_blocks):
        block = data[i * _BLOCK:(i + 1) * _BLOCK]
        flags = _CHUNK_START if i == 0 else 0
        if i == n_blocks - 1:
            return (cv, _words(block), counter, len(block),
                    flags | _CHUNK_END)
        cv = _compress(cv, _words(block), counter, _BLOCK, flags)
    raise AssertionError("unreachable")


def _node_output(data, counter):
    if len(data) <= _CHUNK:
        return _chunk_output(data, counter)
    chunks = (len(data) + _CHUNK - 1) // _CHUNK
    left = 1 << ((chunks - 1).bit_length() - 1)
    lo = _node_output(data[:left * _CHUNK], counter)
    ro = _node_output(data[left * _CHUNK:], counter + left)
    words = _compress(*lo) + _compress(*ro)
    return (_IV, words, 0, _BLOCK, _PARENT)


def blake3_hex(data):
    """Return the BLAKE3 digest of data (bytes) as 64 lowercase hex."""
    cv, words, counter, block_len, flags = _node_output(bytes(data), 0)
    out = _compress(cv, words, counter, block_len, flags | _ROOT)
    return b"".join(w.to_bytes(4, "little") for w in out).hex()
