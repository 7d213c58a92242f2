% rebase('base.tpl')
% import json
<div class="page-head">
  <div>
    <p class="crumbs"><a href="/">Dashboard</a> /</p>
    <h1>{{job.name}}</h1>
    % if job.description:
    <p class="muted">{{job.description}}</p>
    % end
  </div>
  <p class="muted">{{total}} build{{'' if total == 1 else 's'}}</p>
  % if can_write:
  <p><a class="button" href="/jobs/{{job.name}}/edit" id="edit-job">Edit</a></p>
  % end
</div>

<div class="columns wide-left">
<div>
  <section class="card">
    <h2>Duration trend</h2>
    % if trend:
    % n = len(trend)
    % w = 100.0 / max(n, 20)
    <svg class="trend" viewBox="0 0 100 40" preserveAspectRatio="none" role="img" aria-label="durations of the last {{n}} finished builds">
      % for i, bar in enumerate(trend):
      % b = bar['build']
      % h = bar['height'] * 0.38
      <a href="/builds/{{b.id}}"><rect class="bar {{b.status}}" x="{{'%.3f' % (i * w + w * 0.12)}}" y="{{'%.3f' % (40 - h)}}" width="{{'%.3f' % (w * 0.76)}}" height="{{'%.3f' % h}}"><title>#{{b.number}} {{b.status}} {{span(b.duration)}}</title></rect></a>
      % end
    </svg>
    <p class="muted small">last {{n}} finished builds · longest {{span(max(x['build'].duration or 0 for x in trend))}}</p>
    % else:
    <p class="empty">No finished builds yet.</p>
    % end
  </section>

  <section>
    <h2>History</h2>
    % if not history:
    <p class="empty">{{'No older builds.' if older_page else 'Never built.'}}</p>
    % else:
    <div class="scroll">
    <table class="history">
      <thead><tr><th>#</th><th>State</th><th>Branch</th><th>Commit</th><th>Params</th><th>Trigger</th><th>Queued</th><th>Wait</th><th>Duration</th></tr></thead>
      <tbody>
      % for b in history:
      <tr class="row-{{b.status}}">
        <td><a href="/builds/{{b.id}}">#{{b.number}}</a></td>
        <td><span class="badge {{b.status}}">{{b.status}}</span></td>
        <td class="branch-cell">{{b.branch}}</td>
        <td><code title="{{b.commit}}">{{b.commit[:8]}}</code></td>
        <td class="params">{{' '.join(f'{k}={v}' for k, v in b.param_dict.items())}}</td>
        <td>{{b.trigger}}</td>
        <td title="{{stamp(b.queued_at)}}">{{ago(b.queued_at)}}</td>
        <td title="started {{stamp(b.started_at)}}">{{span(b.started_at - b.queued_at) if b.started_at else ''}}</td>
        <td>{{span(b.duration)}}</td>
      </tr>
      % end
      </tbody>
    </table>
    </div>
    % if next_before:
    <p><a class="button" href="/jobs/{{job.name}}?before={{next_before}}">Older builds →</a></p>
    % end
    % if older_page:
    <p><a class="button" href="/jobs/{{job.name}}">← Newest builds</a></p>
    % end
    % end
  </section>
  % include('deployments.tpl', job_name=job.name, rows=deployments)
  % if job.gitops:
  <p class="muted small">GitOps: bumps {{job.gitops['file']}} on {{job.gitops['branch']}} · <a href="/deployments?job={{job.name}}">every bump</a> · roll back with <code>lightci rollback {{job.name}}</code></p>
  % end
</div>

<aside>
  <section class="card">
    <h2>Trigger a build</h2>
    % if error:
    <p class="flash error" role="alert">{{error}}</p>
    % end
    % if can_write:
    <form method="post" action="/jobs/{{job.name}}/trigger" class="stack" id="trigger-form">
      <input type="hidden" name="csrf" value="{{csrf}}">
      <label>Branch <input name="branch" value="{{values['branch']}}" placeholder="{{(job.branches or ['main'])[0].replace('*', '')}}" autocomplete="off"></label>
      <label>Commit <input name="commit" value="{{values['commit']}}" placeholder="branch head" autocomplete="off" spellcheck="false"></label>
      <label>Priority <input name="priority" value="{{values.get('priority', '')}}" placeholder="{{job.priority}} (higher first)" inputmode="numeric" autocomplete="off"></label>
      % for pname in job.params:
      <label>{{pname}} <input name="param.{{pname}}" value="{{values['params'].get(pname, '')}}" autocomplete="off"></label>
      % end
      <button type="submit" class="primary">Trigger build</button>
    </form>
    % else:
    <p><a class="button primary" href="/login?next={{quote(path)}}">Log in to trigger builds</a></p>
    % end
  </section>
  <section class="card">
    <h2>Settings</h2>
    <dl class="meta">
      <dt>Key</dt><dd><code>{{job.key}}</code></dd>
      <dt>Stages</dt><dd>{{' → '.join(job.stages)}}</dd>
      % if job.repo:
      <dt>Repo</dt><dd class="break">{{job.repo.split('@')[-1] if '://' in job.repo else job.repo}}</dd>
      % end
      % if job.branches:
      <dt>Branches</dt><dd>{{', '.join(job.branches)}}</dd>
      % end
      % if job.tags:
      <dt>Tags</dt><dd>{{', '.join(job.tags)}}</dd>
      % end
      % if job.paths:
      <dt>Paths</dt><dd>{{', '.join(job.paths)}}</dd>
      % end
      <dt>Supersede</dt><dd>{{job.supersede}}</dd>
      <dt>Cache</dt><dd>{{job.cache}}</dd>
      <dt>Webhook</dt><dd class="break"><code>{{public_url}}/hooks/{{job.name}}</code>
        % if not webhook_secret_set:
        <br><span class="error-text small">no secret set: webhooks are refused</span>
        % end
      </dd>
    </dl>
  </section>
</aside>
</div>
