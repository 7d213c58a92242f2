% # A build's component images ([[images]]): include with images (rows of lightci.models.Image).
% if images:
  <section class="card images">
    <h2>Images</h2>
    <table class="history" id="images">
      <thead><tr><th>Component</th><th>Tag</th><th>Digest</th></tr></thead>
      <tbody>
      % for i in images:
      <tr class="{{i.state}}">
        <td>{{i.component}} {{!'<span class="badge failed">failed</span>' if i.state == 'failed' else ''}}</td>
        <td><code title="{{i.ref}}">{{i.tag}}</code></td>
        <td class="break"><code>{{i.digest or i.error}}</code></td>
      </tr>
      % end
      </tbody>
    </table>
  </section>
% end
