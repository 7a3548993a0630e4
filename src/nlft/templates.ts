/**
 * The prompt texts of NLFT's three views (docs/method.md §2): the base view's default system text, and the
 * system and user templates of the standard-answer view and the judge view. Templates are plain
 * text with placeholders `{instruction}`, `{input}`, `{answer}` and `{judgment}`; a literal brace is
 * written `{{` or `}}`. The defaults are our own wording; a `--templates FILE` (JSON) may replace any
 * of them, and the texts used are stored with every run.
 */
import { TemplateError } from '../errors.ts';
import { DEFAULT_INSTRUCTION } from '../data/prompt.ts';
import { describeJsonValue, isRecord } from '../util/json.ts';

/** The editable prompt texts of the views. */
export interface NlftTemplates {
  /** System text of the base view when a record has no `instruction` (no placeholders). */
  baseSystem: string;
  /** The standard-answer view ("correct" in the authors' code): the question with its standard answer. */
  standard: { system: string; user: string };
  /** The judge view (negative records only): the question with the judgment of the response. */
  judge: { system: string; user: string };
}

/** Every placeholder a template may use. */
export type Placeholder = 'instruction' | 'input' | 'answer' | 'judgment';

/** Dotted names of the template fields, as in a templates file. */
export type TemplateField = 'baseSystem' | 'standard.system' | 'standard.user' | 'judge.system' | 'judge.user';

/** The placeholders each field may use. `{instruction}` is the record's instruction, else the base system text. */
export const TEMPLATE_PLACEHOLDERS: Readonly<Record<TemplateField, readonly Placeholder[]>> = Object.freeze({
  baseSystem: [],
  'standard.system': ['instruction', 'input', 'answer'],
  'standard.user': ['instruction', 'input', 'answer'],
  'judge.system': ['instruction', 'input', 'answer', 'judgment'],
  'judge.user': ['instruction', 'input', 'answer', 'judgment'],
});

/** Our default wording (docs/method.md §2). */
export const DEFAULT_TEMPLATES: NlftTemplates = Object.freeze({
  baseSystem: DEFAULT_INSTRUCTION,
  standard: Object.freeze({
    system:
      'You are an expert at solving problems like this one. You are given a question together with its ' +
      'standard answer. Use the standard answer as your reference and answer the question.',
    user: 'Question:\n{input}\n\nStandard answer:\n{answer}',
  }),
  judge: Object.freeze({
    system:
      'You are given a question and a judgment that criticises a response to it. Write a response to the ' +
      'question that has exactly the weaknesses the judgment describes.',
    user: 'Question:\n{input}\n\nJudgment of the response:\n{judgment}',
  }),
});

type Piece = { text: string } | { name: string };

const NAME = /^[A-Za-z_][A-Za-z0-9_]*/;

/**
 * Splits a template into literal text and placeholders. Throws TemplateError (no file or field) on a
 * `{` that neither starts a `{name}` nor is doubled, or a `}` that is neither doubled nor closes one.
 */
function scan(text: string): Piece[] {
  const pieces: Piece[] = [];
  let literal = '';
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === '{' && text[i + 1] === '{') {
      literal += '{';
      i += 2;
    } else if (c === '}' && text[i + 1] === '}') {
      literal += '}';
      i += 2;
    } else if (c === '{') {
      const name = NAME.exec(text.slice(i + 1))?.[0];
      if (name === undefined || text[i + 1 + name.length] !== '}') {
        const found = JSON.stringify(text.slice(i, i + 12));
        throw new TemplateError(
          undefined,
          undefined,
          `"{" at character ${i + 1} (${found}) does not start a placeholder like {input}; write "{{" for a literal brace`,
        );
      }
      if (literal) pieces.push({ text: literal });
      literal = '';
      pieces.push({ name });
      i += name.length + 2;
    } else if (c === '}') {
      throw new TemplateError(undefined, undefined, `"}" at character ${i + 1} closes no placeholder; write "}}" for a literal brace`);
    } else {
      literal += c;
      i++;
    }
  }
  if (literal) pieces.push({ text: literal });
  return pieces;
}

/** The placeholder names a template uses, in order of first use. Throws TemplateError on a stray brace. */
export function templatePlaceholders(text: string): string[] {
  const names: string[] = [];
  for (const p of scan(text)) if ('name' in p && !names.includes(p.name)) names.push(p.name);
  return names;
}

/**
 * Replaces every `{name}` of `text` with `values[name]` (inserted as is: braces in a value are not
 * read as placeholders) and `{{`/`}}` with single braces. Throws TemplateError naming a placeholder
 * that `values` lacks, or a stray brace.
 */
export function fillTemplate(text: string, values: Readonly<Record<string, string>>): string {
  let out = '';
  for (const p of scan(text)) {
    if ('text' in p) {
      out += p.text;
    } else if (Object.hasOwn(values, p.name)) {
      out += values[p.name];
    } else {
      const known = Object.keys(values).map((k) => `{${k}}`);
      const detail = known.length > 0 ? `it can use ${known.join(', ')}` : 'it can use no placeholders';
      throw new TemplateError(undefined, undefined, `unknown placeholder {${p.name}}; ${detail}`);
    }
  }
  return out;
}

/** The text of one field. */
export function templateText(t: NlftTemplates, field: TemplateField): string {
  switch (field) {
    case 'baseSystem':
      return t.baseSystem;
    case 'standard.system':
      return t.standard.system;
    case 'standard.user':
      return t.standard.user;
    case 'judge.system':
      return t.judge.system;
    case 'judge.user':
      return t.judge.user;
  }
}

/** Fills one field of `t` with `values`; a failure names `file` (when given) and the field. */
export function fillField(t: NlftTemplates, field: TemplateField, values: Readonly<Record<string, string>>, file?: string): string {
  try {
    return fillTemplate(templateText(t, field), values);
  } catch (e) {
    if (e instanceof TemplateError) throw new TemplateError(file, field, e.message);
    throw e;
  }
}

/** Which placeholders each view needs, and why (for the messages). */
const REQUIRED: readonly { view: 'standard' | 'judge'; name: Placeholder; inUser: boolean; why: string }[] = [
  { view: 'standard', name: 'answer', inUser: true, why: 'the standard view must show the standard answer' },
  { view: 'standard', name: 'input', inUser: false, why: 'the standard view must show the question' },
  { view: 'judge', name: 'judgment', inUser: true, why: 'the judge view must show the judgment' },
  { view: 'judge', name: 'input', inUser: false, why: 'the judge view must show the question' },
];

/**
 * Checks that every field scans, uses only the placeholders it may (TEMPLATE_PLACEHOLDERS), and that
 * each view shows what it needs: `{answer}` in standard.user, `{judgment}` in judge.user, `{input}`
 * in the system or user text of both. Throws TemplateError naming `file` (when given) and the field.
 */
export function checkTemplates(t: NlftTemplates, file?: string): void {
  const used = {} as Record<TemplateField, string[]>;
  for (const field of Object.keys(TEMPLATE_PLACEHOLDERS) as TemplateField[]) {
    let names: string[];
    try {
      names = templatePlaceholders(templateText(t, field));
    } catch (e) {
      if (e instanceof TemplateError) throw new TemplateError(file, field, e.message);
      throw e;
    }
    const allowed: readonly string[] = TEMPLATE_PLACEHOLDERS[field];
    const bad = names.find((n) => !allowed.includes(n));
    if (bad !== undefined) {
      const can = allowed.length > 0 ? `${field} can use ${allowed.map((n) => `{${n}}`).join(', ')}` : `${field} can use no placeholders`;
      throw new TemplateError(file, field, `unknown placeholder {${bad}}; ${can}`);
    }
    used[field] = names;
  }
  for (const { view, name, inUser, why } of REQUIRED) {
    const user = `${view}.user` as const;
    const system = `${view}.system` as const;
    if (used[user].includes(name)) continue;
    if (inUser) throw new TemplateError(file, user, `lacks the placeholder {${name}}; ${why}`);
    if (!used[system].includes(name)) {
      throw new TemplateError(file, user, `lacks the placeholder {${name}}, and ${system} has none either; ${why}`);
    }
  }
}

/** Reads a `{system, user}` group of a templates file over `base`. */
function readGroup(
  json: unknown,
  group: 'standard' | 'judge',
  base: { system: string; user: string },
  file: string,
): { system: string; user: string } {
  if (json === undefined) return { ...base };
  if (!isRecord(json)) {
    throw new TemplateError(file, group, `expected an object with fields "system" and "user", found ${describeJsonValue(json)}`);
  }
  const out = { ...base };
  for (const [key, value] of Object.entries(json)) {
    if (key !== 'system' && key !== 'user') {
      throw new TemplateError(file, `${group}.${key}`, 'unknown field; expected "system" or "user"');
    }
    if (typeof value !== 'string') throw new TemplateError(file, `${group}.${key}`, `expected a string, found ${describeJsonValue(value)}`);
    out[key] = value;
  }
  return out;
}

/**
 * Reads a templates file (the parsed JSON of `--templates FILE`): `{baseSystem?, standard?: {system?,
 * user?}, judge?: {system?, user?}}`. Fields it leaves out keep DEFAULT_TEMPLATES' text; a full file
 * (as stored with a run) reads back as it was. Then checks the result (checkTemplates). Every error is
 * a TemplateError whose message names `fileName` and the field, e.g.
 * `templates.json (judge.user): expected a string, found 3`.
 */
export function parseTemplates(json: unknown, fileName: string): NlftTemplates {
  if (!isRecord(json)) {
    throw new TemplateError(
      fileName,
      undefined,
      `expected a JSON object with fields "baseSystem", "standard" and "judge", found ${describeJsonValue(json)}`,
    );
  }
  for (const key of Object.keys(json)) {
    if (key !== 'baseSystem' && key !== 'standard' && key !== 'judge') {
      throw new TemplateError(fileName, key, 'unknown field; expected "baseSystem", "standard" or "judge"');
    }
  }
  let baseSystem = DEFAULT_TEMPLATES.baseSystem;
  if (json.baseSystem !== undefined) {
    if (typeof json.baseSystem !== 'string') {
      throw new TemplateError(fileName, 'baseSystem', `expected a string, found ${describeJsonValue(json.baseSystem)}`);
    }
    baseSystem = json.baseSystem;
  }
  const templates: NlftTemplates = {
    baseSystem,
    standard: readGroup(json.standard, 'standard', DEFAULT_TEMPLATES.standard, fileName),
    judge: readGroup(json.judge, 'judge', DEFAULT_TEMPLATES.judge, fileName),
  };
  checkTemplates(templates, fileName);
  return templates;
}
