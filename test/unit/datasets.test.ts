/**
 * Prepared datasets as the app keeps them (src/storage/datasets.ts): the store lists saved ones
 * newest first without the draft and skips values of another shape; the training file holds the
 * kept records (not left out, with an answer) and reads back as NLFT records of the right polarity;
 * a kept wrong answer without a judgment is refused, naming the record.
 */
import { expect, it } from 'vitest';
import { parseDataset } from '../../src/data/dataset.ts';
import {
  datasetStore,
  DRAFT_ID,
  keptItems,
  memoryDatasetBackend,
  type PreparedDataset,
  preparedFile,
  type ReviewedItem,
  reviewProblem,
} from '../../src/storage/datasets.ts';

const item = (n: number, o: { correct?: boolean; dropped?: boolean; output?: string } = {}): ReviewedItem => {
  const correct = o.correct ?? false;
  return {
    record: {
      id: `#${n}`,
      input: `Q${n}?`,
      output: o.output ?? `#### ${n}`,
      answer: `#### ${correct ? n : 0}`,
      judgment: correct ? null : `Wrong ${n}.`,
    },
    expected: correct ? String(n) : '0',
    got: String(n),
    correct,
    dropped: o.dropped ?? false,
  };
};

const dataset = (id: string, items: ReviewedItem[]): PreparedDataset => ({
  id,
  name: `data ${id}`,
  at: '2026-01-01T00:00:00.000Z',
  source: 'qa.jsonl',
  judge: 'template (from the grade)',
  model: 'tiny, q8',
  items,
  judgeError: null,
  savedAs: null,
});

it('lists the saved datasets newest first, without the draft or values of another shape', async () => {
  const backend = memoryDatasetBackend();
  const store = datasetStore(backend);
  await store.put(dataset('2026-01-01T00:00:00.000Z', [item(1)]));
  await store.put(dataset('2026-02-01T00:00:00.000Z', [item(2)]));
  await store.put(dataset(DRAFT_ID, [item(3)]));
  await backend.put('junk', { id: 'junk', items: 'no' });
  expect((await store.list()).map((d) => d.id)).toEqual(['2026-02-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z']);
  expect((await store.get(DRAFT_ID))?.items[0].record.id).toBe('#3');
  expect(await store.get('junk')).toBeUndefined();
  await store.remove('2026-02-01T00:00:00.000Z');
  expect((await store.list()).map((d) => d.id)).toEqual(['2026-01-01T00:00:00.000Z']);
});

it('trains on the kept records: not left out, with an answer; they read back as NLFT records', () => {
  const d = dataset('x', [item(1, { correct: true }), item(2), item(3, { dropped: true }), item(4, { output: '  ' })]);
  expect(keptItems(d).map((i) => i.record.id)).toEqual(['#1', '#2']);
  const file = preparedFile(d);
  expect(file.name).toBe('data x.json');
  expect(preparedFile({ ...d, name: 'mine.json' }).name).toBe('mine.json');
  const back = parseDataset(file.bytes, file.name, { requireOutput: true }).records;
  expect(back.map((r) => [r.id, r.polarity, r.judgment])).toEqual([
    ['#1', 'positive', null],
    ['#2', 'negative', 'Wrong 2.'],
  ]);
});

it('refuses a kept wrong answer without a judgment, naming the record, and a dataset with nothing kept', () => {
  const blank = item(2);
  blank.record.judgment = '  ';
  expect(reviewProblem({ items: [item(1, { correct: true }), blank] })).toBe(
    'record #2: the judgment is empty; write what is wrong in the answer, or drop the record.',
  );
  expect(reviewProblem({ items: [item(1, { correct: true }), { ...blank, dropped: true }] })).toBeNull();
  expect(reviewProblem({ items: [item(1, { dropped: true })] })).toBe('Every record is left out: keep at least one to save the dataset.');
});
