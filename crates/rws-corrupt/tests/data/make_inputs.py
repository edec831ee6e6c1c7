"""Regenerates the 200+200 stats inputs (run once; CI never runs Python).

fmnist200.npy: uint8 (200,28,28) = Fashion-MNIST test images 0..199 (idx3 file, 16-byte header
skipped). The test replicates them to 3 channels and zero-pads 2 px per side to 32x32, as
shared/corruptions/fixtures/README.txt does.
synth200.npy: uint8 (200,32,32,3) = synthetic32(200) of the same README: one
np.random.RandomState(20240607) stream; even i: 4x4x3 random cells repeated x8 + randint(-12,13)
jitter, clipped; odd i: uniform colour noise. Its first 8 equal fixtures/inputs.npy[8:16].
stats_ref.tsv: the mad_mean / psnr_mean columns of fixtures/stats.json (CIFAR-10-C parameters).
"""
import gzip, json, sys
import numpy as np

with gzip.open('/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz') as f:
    raw = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
np.save('fmnist200.npy', raw[:200].copy())

rs = np.random.RandomState(20240607)
out = []
for i in range(200):
    if i % 2 == 0:
        cells = rs.randint(0, 256, size=(4, 4, 3))
        img = np.repeat(np.repeat(cells, 8, axis=0), 8, axis=1)
        img = np.clip(img + rs.randint(-12, 13, size=(32, 32, 3)), 0, 255).astype(np.uint8)
    else:
        img = rs.randint(0, 256, size=(32, 32, 3)).astype(np.uint8)
    out.append(img)
synth = np.stack(out)
np.save('synth200.npy', synth)

fx = '/work/shared/corruptions/fixtures/'
ref = np.load(fx + 'inputs.npy')
assert (ref[8:16] == synth[:8]).all(), 'synthetic recipe mismatch'
fm = np.zeros((8, 32, 32, 3), np.uint8)
fm[:, 2:30, 2:30, :] = raw[:8, :, :, None]
assert (ref[:8] == fm).all(), 'fmnist recipe mismatch'

st = json.load(open(fx + 'stats.json'))['stats']
with open('stats_ref.tsv', 'w') as f:
    f.write('# corruption\tseverity\tset\tmad_mean\tpsnr_mean  (from fixtures/stats.json, era env)\n')
    for c in json.load(open(fx + 'stats.json'))['random']:
        for s in range(1, 6):
            for k in ('fmnist200', 'synth200'):
                e = st[c]['s%d' % s][k]
                f.write('%s\t%d\t%s\t%.6f\t%.6f\n' % (c, s, k, e['mad_mean'], e['psnr_mean']))
print('ok')
