% rebase('base.tpl')
% import json
% b = build
<div class="page-head">
  <div>
    <p class="crumbs"><a href="/">Dashboard</a> / <a href="/jobs/{{b.job}}">{{b.job}}</a> /</p>
    <h1>{{b.job}} #{{b.number}} <span class="badge big {{b.status}}" id="state">{{b.status}}</span></h1>
    % if b.error:
    <p class="error-text" id="error">{{b.error}}</p>
    % else:
    <p class="error-text" id="error" hidden></p>
    % end
  </div>
  <div class="actions">
    % if can_write:
    <form method="post" action="/builds/{{b.id}}/cancel" id="cancel-form"{{!'' if not final else ' hidden'}}>
      <input type="hidden" name="csrf" value="{{csrf}}">
      <button type="submit" class="danger" id="cancel">Cancel</button>
    </form>
    <form method="post" action="/builds/{{b.id}}/retry" id="retry-form"{{!'' if final else ' hidden'}}>
      <input type="hidden" name="csrf" value="{{csrf}}">
      <button type="submit" id="retry">Retry</button>
    </form>
    % else:
    <a class="button" href="/login?next={{quote(path)}}">Log in to cancel or retry</a>
    % end
  </div>
</div>

<div class="columns wide-right">
<aside>
  <section class="card">
    <dl class="meta" id="meta">
      <dt>Key</dt><dd><code>{{b.key}}</code></dd>
      <dt>Branch</dt><dd>{{b.branch or '—'}}</dd>
      <dt>Commit</dt><dd class="break"><code data-field="commit">{{b.commit or '—'}}</code></dd>
      % for k, v in b.param_dict.items():
      <dt>{{k}}</dt><dd>{{v}}</dd>
      % end
      <dt>Trigger</dt><dd>{{b.trigger}}</dd>
      <dt>Queued</dt><dd title="{{stamp(b.queued_at)}}">{{stamp(b.queued_at)}}</dd>
      <dt>Started</dt><dd data-field="started_at">{{stamp(b.started_at) or '—'}}</dd>
      <dt>Finished</dt><dd data-field="finished_at">{{stamp(b.finished_at) or '—'}}</dd>
      <dt>Duration</dt><dd data-field="duration">{{span(b.duration) or '—'}}</dd>
      %# Always there, hidden when empty: build.js keeps them up to date as the queue moves.
      <dt {{'' if position else 'hidden'}}>Position</dt><dd data-outlook="position" {{'' if position else 'hidden'}}>{{'%s in the queue' % position if position else ''}}</dd>
      <dt {{'' if outlook.get('waiting_for') else 'hidden'}}>Waiting for</dt><dd data-outlook="waiting_for" {{'' if outlook.get('waiting_for') else 'hidden'}}>{{outlook.get('waiting_for') or ''}}</dd>
      <dt {{'' if outlook.get('eta_start') else 'hidden'}}>Expected start</dt><dd data-outlook="eta_start" {{'' if outlook.get('eta_start') else 'hidden'}}>{{'~%s UTC' % outlook['eta_start'][11:19] if outlook.get('eta_start') else ''}}</dd>
      <dt {{'' if outlook.get('eta_finish') else 'hidden'}}>Expected finish</dt><dd data-outlook="eta_finish" {{'' if outlook.get('eta_finish') else 'hidden'}}>{{'~%s UTC' % outlook['eta_finish'][11:19] if outlook.get('eta_finish') else ''}}</dd>
      <dt>Worker</dt><dd data-field="worker">{{b.worker or '—'}}</dd>
      <dt>Exit code</dt><dd data-field="exit_code">{{'—' if b.exit_code is None else b.exit_code}}</dd>
      % if b.retry_of:
      <dt>Retry of</dt><dd><a href="/builds/{{b.retry_of}}">build {{b.retry_of}}</a></dd>
      % end
      % if b.pr is not None:
      <dt>Pull request</dt><dd id="pr">#{{b.pr}} into {{b.pr_base}}{{' (from a fork)' if b.fork else ''}}</dd>
      % end
      % if b.tag:
      <dt>Tag</dt><dd id="tag">{{b.tag}}</dd>
      % end
    </dl>
  </section>
  % if artifacts:
  <section class="card">
    <h2>Artifacts</h2>
    <ul class="artifacts" id="artifacts">
      % for a in artifacts:
      <li><a href="/builds/{{b.id}}/artifacts/{{quote(a['path'])}}" download>{{a['path']}}</a> <span class="muted small">{{a['size']}} bytes</span></li>
      % end
    </ul>
  </section>
  % end
  % if deliveries:
  <section class="card">
    <h2>Deliveries</h2>
    <ul class="deliveries" id="deliveries">
      % for d in deliveries:
      <li class="delivery {{d['state']}}"><span class="name">{{d['kind']}} {{d['event']}}</span>
        <span class="muted small">{{d['target']}}</span>
        <span class="badge {{d['state']}}">{{d['state']}}</span> <span class="small">tries: {{d['tries']}} · {{d['answer']}}</span></li>
      % end
    </ul>
  </section>
  % end
  <section class="card">
    <h2>Stages</h2>
    <ol class="stages" id="stages">
      % for s in stages:
      <li class="{{'ok' if s.exit_code == 0 else 'bad' if s.exit_code is not None else 'live'}}">
        <span class="name">{{s.name}}</span>
        <span class="time">{{span((s.finished_at or 0) - s.started_at) if s.finished_at else 'running'}}</span>
        % if s.exit_code not in (None, 0):
        <span class="code">exit {{s.exit_code}}</span>
        % end
      </li>
      % end
      % if not stages:
      <li class="empty">{{'waiting to start' if b.status == 'queued' else 'no stage ran'}}</li>
      % end
    </ol>
  </section>
  % include('images.tpl', images=images)
</aside>

<section class="log-box">
  <div class="log-head">
    <h2>Log</h2>
    <span id="log-note" class="muted small"></span>
    <label class="follow small"><input type="checkbox" id="follow" checked> follow</label>
    <a class="small" href="/api/builds/{{b.id}}/log" id="raw-log">raw log</a>
  </div>
  <pre id="log" class="log" data-build="{{b.id}}" data-tail="{{tail}}" data-final="{{'1' if final else ''}}" data-final-states="{{final_states}}" tabindex="0"></pre>
  <noscript><p>The live log needs JavaScript; the <a href="/api/builds/{{b.id}}/log">raw log</a> does not.</p></noscript>
</section>
</div>
<script src="/static/build.js" defer></script>
