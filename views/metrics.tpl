% rebase('base.tpl')
% def pct(v):
%   return '—' if v is None else '%.1f %%' % (v * 100)
% end
% def secs(v):
%   return '—' if v is None else span(v)
% end
<div class="page-head">
  <div>
    <p class="crumbs"><a href="/">Dashboard</a> /</p>
    <h1>Metrics</h1>
    <p class="muted">Delivery numbers over the last {{'%g' % overall['window']['days']}} day(s) · <a href="/deployments">deployments</a> · <a href="/api/metrics?window={{window}}">JSON</a></p>
  </div>
  <form method="get" action="/metrics-page" class="actions">
    <label>Window <input name="window" value="{{window}}" placeholder="30d or 12h" size="8"></label>
    <button type="submit">Show</button>
  </form>
</div>

<section class="card" id="overall">
  <h2>All jobs</h2>
  <dl class="meta">
    <dt>Build success</dt><dd>{{pct(overall['build_success_rate'])}} of {{overall['builds']}} (target {{pct(targets['build_success_rate'])}})</dd>
    <dt>Deploy success</dt><dd>{{pct(overall['deploy_success_rate'])}} of {{overall['deploys']}} (target {{pct(targets['deploy_success_rate'])}})</dd>
    <dt>Lead time p50 / p95</dt><dd>{{secs(overall['lead_time']['p50'])}} / {{secs(overall['lead_time']['p95'])}}</dd>
    <dt>Queue wait mean / p95</dt><dd>{{secs(overall['queue_wait']['mean'])}} / {{secs(overall['queue_wait']['p95'])}}</dd>
    <dt>Slot utilisation</dt><dd>{{pct(overall['slot_utilisation_mean'])}}</dd>
  </dl>
</section>

<section class="card">
  <h2>Slot utilisation</h2>
  % u = overall['slot_utilisation']
  % w = 100.0 / max(len(u), 1)
  <svg class="trend" id="utilisation" viewBox="0 0 100 40" preserveAspectRatio="none" role="img" aria-label="slot utilisation over time">
    % for i, b in enumerate(u):
    % h = max(0.4, b['ratio'] * 38)
    <rect class="bar running" x="{{'%.3f' % (i * w + w * 0.1)}}" y="{{'%.3f' % (40 - h)}}" width="{{'%.3f' % (w * 0.8)}}" height="{{'%.3f' % h}}"><title>{{b['start']}}: {{pct(b['ratio'])}}</title></rect>
    % end
  </svg>
  <p class="muted small">share of slot time in use, {{'per hour' if overall['window']['days'] <= 2 else 'per day'}}</p>
</section>

<section class="card">
  <h2>Timeouts and expiries per day</h2>
  % d = overall['timeouts_per_day']
  % top = max([x['timeouts'] + x['expiries'] for x in d] + [1])
  % w = 100.0 / max(len(d), 1)
  <svg class="trend" id="timeouts" viewBox="0 0 100 40" preserveAspectRatio="none" role="img" aria-label="timeouts and expiries per day">
    % for i, x in enumerate(d):
    % ht = x['timeouts'] * 38.0 / top
    % he = x['expiries'] * 38.0 / top
    <rect class="bar timeout" x="{{'%.3f' % (i * w + w * 0.1)}}" y="{{'%.3f' % (40 - ht)}}" width="{{'%.3f' % (w * 0.8)}}" height="{{'%.3f' % ht}}"><title>{{x['day']}}: {{x['timeouts']}} timeout(s)</title></rect>
    <rect class="bar expired" x="{{'%.3f' % (i * w + w * 0.1)}}" y="{{'%.3f' % (40 - ht - he)}}" width="{{'%.3f' % (w * 0.8)}}" height="{{'%.3f' % he}}"><title>{{x['day']}}: {{x['expiries']}} expiry(ies)</title></rect>
    % end
  </svg>
  <p class="muted small">{{sum(x['timeouts'] for x in d)}} timeout(s), {{sum(x['expiries'] for x in d)}} expiry(ies)</p>
</section>

<section>
  <h2>Per job</h2>
  <div class="scroll">
  <table class="history" id="per-job">
    <thead><tr><th>Job</th><th>Build success</th><th>Deploy success</th><th>Lead time p50 / p95</th><th>Wait mean / p95</th><th>Slots</th><th>Targets</th></tr></thead>
    <tbody>
    % for name, n in per_job.items():
    <tr>
      <td><a href="/jobs/{{name}}">{{name}}</a></td>
      <td>{{pct(n['build_success_rate'])}} ({{n['builds']}})</td>
      <td>{{pct(n['deploy_success_rate'])}} ({{n['deploys']}})</td>
      <td>{{secs(n['lead_time']['p50'])}} / {{secs(n['lead_time']['p95'])}}</td>
      <td>{{secs(n['queue_wait']['mean'])}} / {{secs(n['queue_wait']['p95'])}}</td>
      <td>{{pct(n['slot_utilisation_mean'])}}</td>
      <td>
        % if n['below_target']:
        <span class="badge failed below-target">below target</span> <span class="small">{{'; '.join(n['below_target'])}}</span>
        % else:
        <span class="badge success">ok</span>
        % end
      </td>
    </tr>
    % end
    </tbody>
  </table>
  </div>
</section>
