"""A light, Mac-like look: roomy spacing, a clear accent Generate button, pill chips."""

ACCENT = "#0a84ff"

STYLE = f"""
QLabel#sectionTitle {{ font-weight: 600; }}
QLabel#hint {{ color: #6e6e73; }}
QLabel#statusLabel[level="error"], QLabel#tokenCount[level="error"] {{ color: #d70015; }}
QLabel#tokenCount[level="warn"], QLabel#statusLabel[level="warn"] {{ color: #b25000; }}
QLabel#fieldLabel {{ font-weight: 600; }}
QLabel#tokenCount {{ color: #6e6e73; }}
QLabel#paneTitle {{ font-size: 15px; font-weight: 600; }}
QPushButton#generateButton {{
    background: {ACCENT}; color: white; border: none; border-radius: 7px;
    padding: 7px 22px; font-weight: 600; min-height: 22px;
}}
QPushButton#generateButton:hover {{ background: #0070e0; }}
QPushButton#generateButton:disabled {{ background: #9cc7f5; }}
QPushButton#cancelButton {{ border-radius: 7px; padding: 6px 16px; }}
QPushButton#segmentFirst, QPushButton#segmentLast, QPushButton#segment, QPushButton#durationChip,
QPushButton#sectionButton {{
    border: 1px solid #c8c8cc; background: palette(base); padding: 4px 12px; min-height: 18px;
}}
QPushButton#segmentFirst {{ border-top-left-radius: 6px; border-bottom-left-radius: 6px; }}
QPushButton#segmentLast {{ border-top-right-radius: 6px; border-bottom-right-radius: 6px; border-left: none; }}
QPushButton#durationChip, QPushButton#sectionButton {{ border-radius: 11px; padding: 3px 10px; }}
QPushButton#segmentFirst:checked, QPushButton#segmentLast:checked, QPushButton#segment:checked,
QPushButton#durationChip:checked {{ background: {ACCENT}; color: white; border-color: {ACCENT}; }}
QToolButton#chip {{
    background: #e5f0ff; color: #0a4fa8; border: 1px solid #b9d4fb; border-radius: 10px; padding: 2px 8px;
}}
QToolButton#chip:hover {{ background: #d0e4ff; }}
QToolButton#chip:disabled {{ background: #f2f2f4; color: #a0a0a6; border-color: #dcdce0; }}
QToolButton#disclosure {{ border: none; font-weight: 600; }}
QProgressBar#progressBar {{ border: none; background: #e4e4e8; border-radius: 3px; max-height: 6px; }}
QProgressBar#progressBar::chunk {{ background: {ACCENT}; border-radius: 3px; }}
QWidget#playerBar {{ border-top: 1px solid #d6d6da; }}
QListView#libraryList {{ border: none; background: palette(base); }}
QFrame#queueCard {{ background: #f2f6fd; border: 1px solid #dde7f7; border-radius: 8px; }}
QFrame#queueCard[state="held"] {{ background: #fdf6ec; border-color: #f1dfc2; }}
QLabel#queueTitle {{ font-weight: 600; }}
QPlainTextEdit, QLineEdit {{
    border: 1px solid #c8c8cc; border-radius: 6px; padding: 3px; background: palette(base);
}}
QPlainTextEdit:focus, QLineEdit:focus {{ border: 1px solid {ACCENT}; }}
QListWidget {{ border: 1px solid #dcdce0; border-radius: 6px; }}
"""
