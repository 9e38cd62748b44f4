import re, os
os.chdir('/work/icalib')
def row(name):
    try: t = open(f'out-{name}.txt').read()
    except: return None
    ppl = re.search(r'PPL\(compared\):\s+([\d.]+)', t); kld = re.search(r'Mean\s+KLD:\s+([\d.]+) ± ([\d.]+)', t); top = re.search(r'Same top p:\s+([\d.]+) ± ([\d.]+)', t)
    if not (ppl and kld and top): return None
    return float(ppl.group(1)), float(kld.group(1)), float(kld.group(2)), float(top.group(1))
labels = {'q4_0': 'Q4_0 (RTN), 87.48 MiB', 'gptq-Q3_K_M': 'GPTQ Q3_K_M, 89.18 MiB', 'gptq-Q3_G64': 'GPTQ Q3_G64 (uniform), 74.82 MiB'}
print('| weights | cache | pivot (BOS) | PPL | mean KLD (top-1024) | same top-1 |')
print('| --- | --- | --- | ---: | ---: | ---: |')
for kv in ['f16', 'kivi']:
    for m in ['q4_0', 'gptq-Q3_K_M', 'gptq-Q3_G64']:
        base = None
        for v, label in [('plain', "model's own"), ('intact', 'intact (full model)'), ('cal', 'calibrated')]:
            r = row(f'{kv}-{m}-{v}')
            if r is None: continue
            if v == 'plain': base = r
            delta = '' if v == 'plain' or base is None else f' ({(r[1]/base[1]-1)*100:+.1f}%)'
            b = '**' if v == 'cal' else ''
            print(f"| {labels[m]} | {'F16' if kv=='f16' else 'KIVI-2'} | {label} | {b}{r[0]:.2f}{b} | {b}{r[1]:.4f}{b} ± {r[2]:.4f}{delta} | {r[3]:.2f} % |")
