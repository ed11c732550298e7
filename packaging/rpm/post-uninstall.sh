if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
    # Upgrade: the new version takes over.
    if [ "$1" -ge 1 ]; then
        systemctl try-restart kinesis-agent.service >/dev/null 2>&1 || true
    fi
fi
