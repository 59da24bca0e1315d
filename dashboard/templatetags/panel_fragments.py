"""``{% panel_fragment run %}...{% endpanel_fragment %}``: a panel's per-user cached
rendering, checked against the namespace versions read with it.

Django's ``{% cache %}`` keys a fragment on its versions, so a warm panel needed two
cache round trips: the versions, then the fragment. Here ``panel_runs.start`` reads
both at once and the block only decides: the kept rendering when it was made under
the current versions, else the rendering of the same data snapshot another request
made (``PanelRun.render_shared``), else the block rendered now; the view keeps it for
this user once the response is rendered (``PanelRun.finish``).
"""

from __future__ import annotations

from django import template
from django.template.base import FilterExpression, NodeList, Parser, Token

register = template.Library()


class PanelFragmentNode(template.Node):
    def __init__(self, nodelist: NodeList, run: FilterExpression) -> None:
        self.nodelist = nodelist
        self.run = run

    def render(self, context: template.Context) -> str:
        run = self.run.resolve(context)
        if run.fragment is not None:
            return run.fragment
        run.rendered = run.render_shared(lambda: self.nodelist.render(context))
        return run.rendered


@register.tag
def panel_fragment(parser: Parser, token: Token) -> PanelFragmentNode:
    bits = token.split_contents()
    if len(bits) != 2:
        raise template.TemplateSyntaxError("{% panel_fragment %} takes one argument: the run.")
    nodelist = parser.parse(("endpanel_fragment",))
    parser.delete_first_token()
    return PanelFragmentNode(nodelist, parser.compile_filter(bits[1]))
