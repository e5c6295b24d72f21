"""The provider's few pages, server-rendered, minimal, in Chinese: log in by SMS code, consent, errors, logged out.
No script and no outside assets; every value is escaped."""

from __future__ import annotations

from html import escape

from app_backend.oidc.schemas import CLAIM_LABELS, SENSITIVE

_STYLE = (
    "body{font-family:sans-serif;max-width:30rem;margin:2rem auto;padding:0 1rem;line-height:1.6}"
    "button{font-size:1rem;padding:.5rem 1.2rem;margin:.3rem .3rem 0 0}input[type=text],input[type=tel]"
    "{font-size:1rem;padding:.4rem;width:100%;box-sizing:border-box}.s{color:#b00}.n{color:#555;font-size:.9rem}"
)


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{escape(title)}</h1>{body}</body></html>"
    )


def _hidden(fields: list[tuple[str, str]]) -> str:
    return "".join(f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in fields)


def consent_page(
    organisation: str,
    client_name: str,
    purpose: str,
    asked: list[str],
    already: frozenset[str],
    level_note: str,
    fields: list[tuple[str, str]],
) -> str:
    """Every claim asked for is listed; a sensitive one not yet consented has its own box, never pre-ticked (PIPL
    art. 29). "同意" grants the others; a sensitive one goes only if its box is ticked."""
    items = []
    for claim in asked:
        label = escape(CLAIM_LABELS[claim])
        if claim in SENSITIVE and claim not in already:
            items.append(
                f'<li><label><input type="checkbox" name="sensitive" value="{escape(claim)}"> {label}'
                ' <span class="s">（敏感个人信息，需您单独同意）</span></label></li>'
            )
        else:
            note = "（此前已同意）" if claim in already else ""
            items.append(f"<li>{label}{note}</li>")
    listed = "".join(items) or "<li>仅您在本部门的匿名标识和认证等级</li>"
    body = (
        f"<p><strong>{escape(organisation)}</strong>（{escape(client_name)}）请求使用泰州通账号登录，"
        f"并获取您的以下信息：</p><ul><li>您在本部门的匿名标识（各部门不同）和认证等级{escape(level_note)}</li>"
        f"{listed}</ul><p>用途：{escape(purpose)}</p>"
        '<p class="n">每次向该部门提供信息都会记录在“我的—数据使用记录”中，您可以随时撤回授权。</p>'
        f'<form method="post" action="/oidc/authorize">{_hidden(fields)}'
        '<button type="submit" name="decision" value="allow">同意并登录</button>'
        '<button type="submit" name="decision" value="deny">拒绝</button></form>'
    )
    return _page("授权登录", body)


def login_page(next_path: str, phone: str = "", sent: bool = False, error: str = "") -> str:
    problem = f'<p class="s">{escape(error)}</p>' if error else ""
    if not sent:
        form = (
            '<form method="post" action="/oidc/login/otp">'
            f'{_hidden([("next", next_path)])}<label>手机号码<input type="tel" name="phone" '
            f'value="{escape(phone)}" maxlength="20"></label><button type="submit">获取验证码</button></form>'
        )
    else:
        form = (
            '<form method="post" action="/oidc/login">'
            f"{_hidden([('next', next_path), ('phone', phone)])}<p>验证码已发送至 {escape(phone)}</p>"
            '<label>短信验证码<input type="text" name="otp" maxlength="6" inputmode="numeric"></label>'
            '<button type="submit">登录</button></form>'
        )
    return _page("登录泰州通", problem + form)


def error_page(title: str, detail: str) -> str:
    return _page(title, f"<p>{escape(detail)}</p>")


def logged_out_page() -> str:
    return _page("已退出", "<p>您已退出泰州通统一登录。</p>")
