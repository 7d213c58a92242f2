% # GitOps bumps, newest first: include with bumps (rows of lightci.models.Bump).
<section class="bumps">
  <h2>GitOps bumps</h2>
  % if not bumps:
  <p class="empty">No bumps yet.</p>
  % else:
  <div class="scroll">
  <table class="history" id="bumps">
    <thead><tr><th>Id</th><th>Job</th><th>Kind</th><th>State</th><th>Commit</th><th>Values</th><th>Build</th><th>When</th></tr></thead>
    <tbody>
    % for r in bumps:
    % badge = {'pushed': 'success', 'unchanged': 'cancelled'}.get(r.state, 'failed')
    <tr>
      <td>{{r.id}}</td>
      <td><a href="/jobs/{{r.job}}">{{r.job}}</a></td>
      <td>{{r.kind}}{{' of ' + str(r.of) if r.of else ''}}</td>
      <td><span class="badge {{badge}}">{{r.state}}</span></td>
      <td><code title="{{r.repo}} {{r.branch}}">{{r.commit[:12] or '—'}}</code></td>
      <td class="small">
        % for p, v in json.loads(r.after).items():
        <code>{{p}} = {{v}}</code><br>
        % end
        % if r.error:
        <span class="error-text">{{r.error}}</span>
        % end
      </td>
      <td>{{!'<a href="/builds/%d">#%d</a>' % (r.build_id, r.build_number) if r.build_id else '—'}}</td>
      <td title="{{stamp(r.created_at)}}">{{ago(r.created_at)}}</td>
    </tr>
    % end
    </tbody>
  </table>
  </div>
  % end
</section>
