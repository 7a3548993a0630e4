/**
 * The Playground panel: a prompt and a response, scored by the loaded model token by token; the
 * model (with the adapter trained last, if any) can also write the response itself (Generate).
 * Every edit is handed to `onDraftChange` (which persists it), so nothing typed is lost on reload.
 */
import type { PlaygroundDraft } from '../../storage/db.ts';
import type { TokenScores } from '../../../workers/protocol.ts';
import { errorLine, formatCount, h, panel } from '../dom.ts';
import { errorMessage, type TrainerClient } from '../trainer-client.ts';
import { renderLegend, renderTokenStrip } from './token-strip.ts';

/** Tokens the Generate button writes at most (greedy). */
const GENERATE_TOKENS = 128;

/** What the Playground panel needs from the app. */
export interface PlaygroundPanelOptions {
  trainer: TrainerClient;
  draft: PlaygroundDraft;
  /** Persists the draft; the panel shows whether it was saved. */
  onDraftChange(draft: PlaygroundDraft): Promise<void>;
  /** Called after a successful score (e.g. to refresh the GPU memory figures). */
  onScored(): void;
}

/** The Playground panel's element and controls. */
export interface PlaygroundPanelView {
  el: HTMLElement;
  /** Replaces the prompt and response (a picked record), keeping the chat choice, and saves. */
  fill(prompt: string, response: string): void;
  /** Enables scoring when a model is ready. */
  setModelReady(ready: boolean): void;
  /** The loaded model's own system text (its templates.json): filled in when the system field is empty. */
  useModelSystem(text: string | undefined): void;
}

/** Builds the Playground panel with `opts.draft` filled in; Score stays disabled until `setModelReady(true)`. */
export function createPlaygroundPanel(opts: PlaygroundPanelOptions): PlaygroundPanelView {
  const { el, body } = panel('Playground', 'playground-panel');
  const prompt = h('textarea', { id: 'prompt', testid: 'prompt', rows: 4, spellcheck: false });
  const response = h('textarea', { id: 'response', testid: 'response', rows: 6, spellcheck: false });
  const chat = h('input', { type: 'checkbox', id: 'chat', testid: 'chat' });
  const system = h('textarea', {
    rows: 2,
    spellcheck: false,
    id: 'system',
    testid: 'playground-system',
    placeholder: 'none',
    title: 'The system turn before the prompt under the chat template (a model trained with one answers best under it)',
  });
  const score = h('button', { type: 'button', class: 'primary', testid: 'score', disabled: true }, 'Score');
  const gen = h(
    'button',
    { type: 'button', testid: 'generate', disabled: true, title: `Greedy, up to ${GENERATE_TOKENS} tokens` },
    'Generate',
  );
  const genInfo = h('p', { class: 'hint', testid: 'generate-info', hidden: true });
  const saved = h('span', { class: 'hint', testid: 'draft-status', 'data-state': 'saved' });
  const error = errorLine('score-error');
  const summary = h('p', { class: 'summary', testid: 'score-summary', hidden: true });
  const result = h('div', { class: 'result' });
  prompt.value = opts.draft.prompt;
  response.value = opts.draft.response;
  chat.checked = opts.draft.chat;
  system.value = opts.draft.system ?? '';
  const showSystem = () => {
    system.disabled = !chat.checked;
  };
  showSystem();

  body.append(
    h('label', { class: 'field', for: 'system' }, 'System text (chat template)'),
    system,
    h('label', { class: 'field', for: 'prompt' }, 'Prompt'),
    prompt,
    h('label', { class: 'field', for: 'response' }, 'Response (scored token by token)'),
    response,
    h(
      'div',
      { class: 'actions' },
      h('label', { class: 'check', for: 'chat' }, chat, 'Chat template (prompt as a user turn)'),
      score,
      gen,
      saved,
    ),
    genInfo,
    error.el,
    summary,
    result,
  );

  let modelReady = false;
  let scoring = false;
  let generating = false;
  const updateButton = () => {
    score.disabled = !modelReady || scoring || generating;
    score.textContent = scoring ? 'Scoring…' : 'Score';
    score.setAttribute('aria-busy', String(scoring));
    gen.disabled = !modelReady || scoring || generating;
    gen.textContent = generating ? 'Generating…' : 'Generate';
  };

  let saves = 0;
  const save = () => {
    const id = ++saves;
    saved.dataset.state = 'saving';
    saved.textContent = 'Saving…';
    result.classList.add('stale');
    opts.onDraftChange({ prompt: prompt.value, response: response.value, chat: chat.checked, system: system.value }).then(
      () => {
        if (id !== saves) return;
        saved.dataset.state = 'saved';
        saved.textContent = 'Draft saved';
      },
      (e: unknown) => {
        saved.dataset.state = 'error';
        saved.textContent = `Draft not saved: ${errorMessage(e)}`;
      },
    );
  };
  prompt.addEventListener('input', save);
  response.addEventListener('input', save);
  chat.addEventListener('change', () => {
    showSystem();
    save();
  });
  system.addEventListener('input', save);

  const showScores = (s: TokenScores) => {
    const sum = s.logprobs.reduce((a, b) => a + b, 0);
    const mean = sum / s.logprobs.length;
    const value = (testid: string, v: number) => h('strong', { testid, 'data-value': v }, v.toFixed(3));
    summary.replaceChildren(
      `${formatCount(s.ids.length)} response tokens after ${formatCount(s.promptTokens)} prompt tokens · sum log p `,
      value('logprob-sum', sum),
      ' · mean ',
      value('logprob-mean', mean),
      ` nats/token · ${Math.round(s.millis)} ms`,
    );
    summary.hidden = false;
    result.replaceChildren(renderTokenStrip(s), renderLegend());
    result.classList.remove('stale');
  };

  score.addEventListener('click', async () => {
    scoring = true;
    updateButton();
    error.show(null);
    try {
      showScores(await opts.trainer.logprobs({ prompt: prompt.value, response: response.value, chat: chat.checked, system: system.value }));
      opts.onScored();
    } catch (e) {
      error.show(errorMessage(e));
    } finally {
      scoring = false;
      updateButton();
    }
  });

  gen.addEventListener('click', async () => {
    generating = true;
    updateButton();
    error.show(null);
    genInfo.hidden = true;
    try {
      const r = await opts.trainer.generate(
        { prompt: prompt.value, chat: chat.checked, system: system.value, maxNewTokens: GENERATE_TOKENS, temperature: 0, seed: 0 },
        (text) => {
          response.value = text;
        },
      );
      response.value = r.text;
      save();
      const why = {
        stop: 'the end-of-sequence token',
        length: `the ${GENERATE_TOKENS}-token limit`,
        context: "the model's context length",
        cancelled: 'a stop',
      }[r.reason];
      genInfo.textContent = `Generated ${r.tokens} tokens in ${(r.millis / 1000).toFixed(1)} s, ended by ${why}. Score it to see each token's log-probability.`;
      genInfo.hidden = false;
      opts.onScored();
    } catch (e) {
      error.show(errorMessage(e));
    } finally {
      generating = false;
      updateButton();
    }
  });

  return {
    el,
    fill(p, r) {
      prompt.value = p;
      response.value = r;
      save();
    },
    setModelReady(ready) {
      modelReady = ready;
      updateButton();
    },
    useModelSystem(text) {
      if (text === undefined || system.value.trim() !== '') return;
      system.value = text;
      save();
    },
  };
}
