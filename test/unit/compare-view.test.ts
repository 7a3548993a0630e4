/**
 * The pure parts of the app's Compare view (src/app/views/compare-data.ts): which stored
 * evaluations can stand side by side and why not, what each bar says it evaluated (older stored
 * evaluations by their label), the grid's disagreement counts by hand, the differences to the first
 * evaluation, and reading a compare.json as `nlft compare --out` writes it, bad files included.
 */
import { describe, expect, it } from 'vitest';
import { type EvalItem, summarize } from '../../src/eval/accuracy.ts';
import { type ArmOutcome, compareRows, DEFAULT_BOOTSTRAP, pairedBootstrap } from '../../src/eval/compare.ts';
import { NlftError } from '../../src/errors.ts';
import type { EvalOutcome } from '../../src/session/requests.ts';
import {
  comparableEvals,
  differencesToFirst,
  disagreements,
  evalComparison,
  evalDataName,
  evalTitle,
  readCompareJson,
  whyNotComparable,
} from '../../src/app/views/compare-data.ts';

const EXPECTED = ['18', '3', '70000', '540', '20'];

/** Items 1.. with the expected answers and these right/wrong marks. */
function items(correct: readonly boolean[], expected: readonly (string | null)[] = EXPECTED): EvalItem[] {
  return correct.map((c, i) => ({
    index: i + 1,
    id: `q${i + 1}`,
    expected: expected[i],
    got: c ? expected[i] : '0',
    correct: c,
    output: '',
    tokens: 3,
    ended: 'stop',
  }));
}

/** A stored evaluation as `runEvaluation` makes it now (with the fields the view reads). */
function outcome(at: string, correct: readonly boolean[], o: Partial<EvalOutcome> = {}): EvalOutcome {
  const its = o.items ?? items(correct);
  const dataName = o.dataName ?? 'gsm8k-sample.jsonl';
  return {
    label: `Demo Llama, q8, no adapter; ${dataName}, greedy, up to 8 tokens, system "Be brief."`,
    at,
    summary: summarize(its),
    items: its,
    stopped: false,
    dataName,
    model: 'Demo Llama, q8',
    system: 'Be brief.',
    adapter: null,
    ...o,
  };
}

/** An evaluation stored before the outcome named its file, model, system text and adapter. */
function older(at: string, correct: readonly boolean[], label: string): EvalOutcome {
  const its = items(correct);
  return { label, at, summary: summarize(its), items: its, stopped: false };
}

describe('which stored evaluations can be compared', () => {
  const base = outcome('t1', [true, false, false, true, false]);

  it('the same file and the same expected answers in order: comparable', () => {
    expect(whyNotComparable(base, outcome('t2', [false, false, true, true, true]))).toBeNull();
  });

  it('another file, another number of items, or other expected answers: says which', () => {
    expect(whyNotComparable(base, outcome('t2', [true, true, true, true, true], { dataName: 'test.jsonl' }))).toBe(
      'another test file (test.jsonl, not gsm8k-sample.jsonl)',
    );
    expect(whyNotComparable(base, outcome('t2', [true, true]))).toBe('another number of items (2, not 5)');
    expect(whyNotComparable(base, outcome('t2', [true, true, true], { stopped: true }))).toBe(
      'another number of items (3, stopped early, not 5)',
    );
    const shuffled = items([true, true, true, true, true], ['18', '3', '540', '70000', '20']);
    expect(whyNotComparable(base, outcome('t2', [], { items: shuffled }))).toBe('other items: item #3 expects 540, not 70000');
    const none = items([false, false, false, false, false], ['18', null, '70000', '540', '20']);
    expect(whyNotComparable(base, outcome('t2', [], { items: none }))).toBe('other items: item #2 expects none, not 3');
  });

  it('older evaluations: the file from the label, or the items alone when the label does not say', () => {
    const old = older(
      't0',
      [true, true, false, false, false],
      'Demo Llama, q8, no adapter; gsm8k-sample.jsonl, greedy, up to 8 tokens, system "x"',
    );
    expect(evalDataName(old)).toBe('gsm8k-sample.jsonl');
    expect(whyNotComparable(base, old)).toBeNull();
    const elsewhere = older('t0', [true, true, false, false, false], 'M, q8, no adapter; other.jsonl, greedy, up to 8 tokens, system "x"');
    expect(whyNotComparable(elsewhere, base)).toBe('another test file (gsm8k-sample.jsonl, not other.jsonl)');
    const unlabelled = older('t0', [true, true, false, false, false], 'something else');
    expect(evalDataName(unlabelled)).toBeNull();
    expect(whyNotComparable(unlabelled, base)).toBeNull();
    expect(whyNotComparable(base, older('t0', [true], 'something else'))).toBe('another number of items (1, not 5)');
  });

  it('keeps the chosen ones that match the first, and leaves the others out with the reason', () => {
    const other = outcome('t3', [true, true], {});
    const later = outcome('t4', [false, false, false, false, true]);
    const { kept, left } = comparableEvals([base, other, later]);
    expect(kept.map((o) => o.at)).toEqual(['t1', 't4']);
    expect(left).toEqual([{ outcome: other, why: 'another number of items (2, not 5)' }]);
    expect(comparableEvals([])).toEqual({ kept: [], left: [] });
  });

  it('each bar says what was evaluated: base model, the adapter, or an older label', () => {
    expect(evalTitle(base)).toEqual({ title: 'base model', detail: 'Demo Llama, q8 · system "Be brief."' });
    const tuned = outcome('t2', [true, true, true, true, true], {
      adapter: { runId: '2026-12-01T10:00:00.000Z', description: 'nlft run of 12/1/26 on nlft-sample.json, trained adapter (r 4)' },
      system: 'Solve it; end with #### N.',
    });
    expect(evalTitle(tuned)).toEqual({
      title: 'nlft run of 12/1/26 on nlft-sample.json, trained adapter (r 4)',
      detail: 'Demo Llama, q8 · system "Solve it; end with #### N."',
    });
    const old = older('t0', [true], 'M, q8, trained adapter (r 4 on gate_proj); a.jsonl, greedy, up to 8 tokens, system "x"');
    expect(evalTitle(old)).toEqual({ title: old.label, detail: '' });
  });
});

describe('the grid and the differences', () => {
  it('counts the items each pair disagrees on, by hand', () => {
    // item:        1      2      3      4      5
    const a = [true, false, false, true, false];
    const b = [true, true, false, false, false]; // differs from a on 2, 4
    const c = [false, true, false, false, true]; // differs from a on 1, 2, 4, 5; from b on 1, 5
    const cmp = evalComparison([outcome('a', a), outcome('b', b), outcome('c', c)]);
    expect(cmp.items).toEqual(EXPECTED.map((e, i) => ({ index: i + 1, expected: e })));
    expect(cmp.columns.map((col) => col.runs)).toEqual([
      [{ seed: null, correct: 2, total: 5 }],
      [{ seed: null, correct: 2, total: 5 }],
      [{ seed: null, correct: 2, total: 5 }],
    ]);
    const d = disagreements(cmp);
    expect(d.items).toEqual([true, true, false, true, true]);
    expect(d.pairs).toEqual([
      { a: 0, b: 1, count: 2 },
      { a: 0, b: 2, count: 4 },
      { a: 1, b: 2, count: 2 },
    ]);
    expect(disagreements(evalComparison([outcome('a', a)]))).toEqual({ items: [false, false, false, false, false], pairs: [] });
  });

  it('each evaluation against the first: the paired bootstrap over the items', () => {
    const a = [true, false, false, true, false];
    const b = [true, true, true, true, false];
    const cmp = evalComparison([outcome('a', a), outcome('b', b)]);
    const [first, second] = differencesToFirst(cmp);
    expect(first).toBeNull();
    expect(second!.diff).toBeCloseTo(0.4, 15);
    expect(second).toEqual(pairedBootstrap([1, 1, 1, 1, 0], [1, 0, 0, 1, 0]));
    expect(second!.lo).toBeGreaterThanOrEqual(0);
    expect(second!.hi).toBeLessThanOrEqual(0.8);
  });
});

/** A compare.json in the shape `nlft compare --out` writes (src/node/cli/compare.ts), rows from `compareRows`. */
function compareJson(arms: readonly ArmOutcome[], baseCorrect: boolean[]) {
  const rows = compareRows(arms, 'sft');
  return {
    command: 'nlft compare --model M --data d.json --eval test.jsonl --arms sft,nlft --seeds 0,1,2 --out out',
    model: 'M',
    data: 'd.json',
    eval: 'test.jsonl',
    quant: 'q8',
    maxNewTokens: 64,
    trainingFlags: { epochs: '1' },
    reference: 'sft',
    bootstrap: DEFAULT_BOOTSTRAP,
    items: EXPECTED.map((expected, i) => ({ index: i + 1, id: `q${i + 1}`, expected })),
    base: { label: 'M, q8, no adapter; test.jsonl, greedy', summary: {}, correct: baseCorrect },
    runs: arms.flatMap((a) =>
      a.seeds.map((seed, s) => ({
        arm: a.arm,
        seed,
        dir: `out/runs/${a.arm}-seed${seed}`,
        status: 'done',
        trainSeconds: a.trainSeconds[s],
        system: 'Solve it.',
        label: 'x',
        summary: {},
        correct: a.correct[s],
      })),
    ),
    rows,
  };
}

describe('a compare.json from the CLI', () => {
  const arms: ArmOutcome[] = [
    {
      arm: 'sft',
      seeds: [0, 1, 2],
      correct: [
        [true, false, false, true, false],
        [true, true, false, true, false],
        [true, false, false, false, false],
      ],
      trainSeconds: [10, 11, 12],
    },
    {
      arm: 'nlft:negatives=anchor',
      seeds: [0, 1, 2],
      correct: [
        [true, true, true, true, false],
        [true, true, false, true, false],
        [false, true, true, true, false],
      ],
      trainSeconds: [20, 21, 22],
    },
  ];
  const base = [false, false, false, true, false];
  const good = compareJson(arms, base);

  it('reads the base model and each arm into columns: mean over seeds, each seed counted, items as the fraction of seeds right', () => {
    const x = readCompareJson(JSON.stringify(good), 'compare.json');
    expect(x.reference).toBe('sft');
    expect(x.eval).toBe('test.jsonl');
    expect(x.command).toBe(good.command);
    expect(x.rows).toEqual(good.rows);
    const [b, sft, anchor] = x.comparison.columns;
    expect(x.comparison.columns).toHaveLength(3);
    expect(b).toMatchObject({ title: 'base model', scores: [0, 0, 0, 1, 0], runs: [{ seed: null, correct: 1, total: 5 }] });
    expect(sft.title).toBe('sft');
    expect(sft.detail).toBe('3 seeds · system "Solve it."');
    expect(sft.runs).toEqual([
      { seed: 0, correct: 2, total: 5 },
      { seed: 1, correct: 3, total: 5 },
      { seed: 2, correct: 1, total: 5 },
    ]);
    expect(sft.scores).toEqual([1, 1 / 3, 0, 2 / 3, 0]);
    expect(anchor.scores).toEqual([2 / 3, 1, 2 / 3, 1, 0]);
    // Items 1, 2, 3 and 4 differ between some columns; item 5 is wrong everywhere.
    expect(disagreements(x.comparison).items).toEqual([true, true, true, true, false]);
    // base vs sft: items 1, 2, 4; base vs anchor: 1, 2, 3; sft vs anchor: 1, 2, 3, 4.
    expect(disagreements(x.comparison).pairs.map((p) => p.count)).toEqual([3, 3, 4]);
  });

  it('a bad file: the message names the file and the field, what was expected and what was found', () => {
    const bad = (change: (j: ReturnType<typeof compareJson>) => unknown) => {
      const j = structuredClone(good);
      const text = JSON.stringify(change(j) ?? j);
      try {
        readCompareJson(text, 'mine.json');
      } catch (e) {
        expect(e).toBeInstanceOf(NlftError);
        expect((e as NlftError).code).toBe('compare-file');
        return (e as Error).message;
      }
      throw new Error('read a bad file without complaint');
    };
    expect(() => readCompareJson('{"items": [', 'mine.json')).toThrow(/^mine\.json: not JSON \(.+\); expected the compare\.json/);
    expect(bad(() => [1, 2])).toBe('mine.json: field "(top level)": expected an object, found [1,2]');
    expect(
      bad((j) => {
        delete (j as Partial<typeof j>).items;
      }),
    ).toBe('mine.json: field "items": expected a list of test items, found nothing');
    expect(
      bad((j) => {
        j.items[2].expected = 7 as unknown as string;
      }),
    ).toBe('mine.json: field "items[2].expected": expected a string or null, found 7');
    expect(
      bad((j) => {
        j.runs[4].correct = [true, false];
      }),
    ).toBe('mine.json: field "runs[4].correct": expected a list of 5 true/false values (one per item), found [true,false]');
    expect(
      bad((j) => {
        j.base.correct = [1, 0, 0, 1, 0] as unknown as boolean[];
      }),
    ).toBe('mine.json: field "base.correct": expected a list of 5 true/false values (one per item), found [1,0,0,1,0]');
    expect(
      bad((j) => {
        j.rows[1].arm = 'nlft';
      }),
    ).toBe('mine.json: field "rows[1].arm": expected an arm that has runs in "runs", found "nlft"');
    expect(
      bad((j) => {
        j.rows.pop();
      }),
    ).toBe('mine.json: field "runs[3].arm": expected an arm with a row in "rows", found "nlft:negatives=anchor"');
    expect(
      bad((j) => {
        (j.rows[1].vsReference as unknown as Record<string, unknown>).lo = 'low';
      }),
    ).toBe('mine.json: field "rows[1].vsReference.lo": expected a number, found "low"');
    expect(
      bad((j) => {
        j.rows[0].accuracy = [0.4];
      }),
    ).toBe('mine.json: field "rows[0].accuracy": expected 3 accuracies (one per seed), found [0.4]');
    expect(
      bad((j) => {
        j.runs[0].seed = 'zero' as unknown as number;
      }),
    ).toBe('mine.json: field "runs[0].seed": expected a whole number, found "zero"');
  });
});
