% rebase('base.tpl')
% slots, used = state['slots'], state['slots_used']
<div class="summary" data-refresh="5">
  <div class="stat">
    <span class="label">Slots in use</span>
    <span class="value" id="slots">{{used}}/{{slots}}</span>
    <span class="meter" aria-hidden="true"><span style="--fill: {{min(100, int(100 * used / slots)) if slots else 100}}%" class="fill{{' paused' if not slots else ''}}"></span></span>
    % if not slots:
    <span class="muted small">paused ([builds] slots = 0)</span>
    % end
  </div>
  <div class="stat"><span class="label">Running</span><span class="value">{{len(state['running'])}}</span></div>
  <div class="stat"><span class="label">Queued</span><span class="value">{{state['queued_total']}}</span></div>
  <div class="stat"><span class="label">Jobs</span><span class="value">{{len(rows)}}</span></div>
</div>
% if not_isolated:
<p class="card error-text" id="not-isolated">{{not_isolated}} See the README, "What a build can reach".</p>
% end
% include('deployments.tpl', job_name=None, sick=unhealthy)
% include('targets.tpl', below=below_target)

<section>
  <h2>Jobs</h2>
  % if can_write:
  <p><a class="button" href="/jobs/new" id="new-job">New job</a></p>
  % end
  % if not rows and not broken:
  <p class="empty">No jobs yet. Add a directory with a <code>job.toml</code> and a stage script under <code>jobs/</code>.</p>
  % end
  <ul class="jobs">
    % for job, last in rows:
    <li class="job state-{{last.status if last else 'none'}}">
      <a class="job-name" href="/jobs/{{job.name}}">{{job.name}}</a>
      <span class="desc">{{job.description}}</span>
      % if last:
      <a class="last" href="/builds/{{last.id}}">
        <span class="badge {{last.status}}">{{last.status}}</span>
        <span class="num">#{{last.number}}</span>
        % if last.branch:
        <span class="branch" title="branch">{{last.branch}}</span>
        % end
        % if last.commit:
        <code class="commit" title="{{last.commit}}">{{last.commit[:8]}}</code>
        % end
        <span class="when muted">{{ago(last.queued_at)}}</span>
        % if last.duration is not None:
        <span class="dur muted">{{span(last.duration)}}</span>
        % end
      </a>
      % else:
      <span class="last muted">never built</span>
      % end
    </li>
    % end
    % for name, problem in broken.items():
    <li class="job state-broken">
      <span class="job-name">{{name}}</span>
      <span class="badge failed">broken</span>
      <span class="desc error-text">{{problem}}</span>
      % if can_write:
      <a href="/jobs/{{name}}/edit">Edit</a>
      % end
    </li>
    % end
  </ul>
</section>

<div class="columns">
<section>
  <h2>Running</h2>
  % if not state['running']:
  <p class="empty">Nothing running.</p>
  % end
  <ul class="builds">
    % for b in state['running']:
    <li><a href="/builds/{{b['id']}}"><span class="badge {{b['status']}}">{{b['status']}}</span>
      <b>{{b['job']}} #{{b['number']}}</b> <span class="muted">{{b['stage'] or 'starting'}}</span>
      <span class="key" title="key">{{b['key']}}</span>
      <span class="when">{{span(b['duration'])}}</span>
      % if b.get('eta_finish'):
      <span class="muted eta">ends ~{{b['eta_finish'][11:19]}} UTC</span>
      % end
      </a></li>
    % end
  </ul>
</section>
<section>
  <h2>Queued</h2>
  % if not state['queued']:
  <p class="empty">The queue is empty.</p>
  % end
  <ul class="builds">
    % for b in state['queued']:
    <li><a href="/builds/{{b['id']}}"><span class="badge queued">#{{b['position']}}</span>
      <b>{{b['job']}} #{{b['number']}}</b> <span class="key" title="key">{{b['key']}}</span>
      <span class="when">waiting {{span(b['waited'])}}</span>
      <span class="muted waiting-for">{{b['waiting_for']}}</span>
      % if b.get('eta_start'):
      <span class="muted eta">starts ~{{b['eta_start'][11:19]}}, ends ~{{(b['eta_finish'] or '')[11:19] or '?'}} UTC</span>
      % end
      </a></li>
    % end
  </ul>
  % if state['queued_total'] > len(state['queued']):
  <p class="muted">and {{state['queued_total'] - len(state['queued'])}} more</p>
  % end
</section>
</div>
