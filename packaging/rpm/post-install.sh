if [ "$1" -eq 1 ]; then
    # agent.json may hold credentials: readable by the service's group only.
    for f in /etc/aws-kinesis/agent.json /etc/aws-kinesis/agent.d; do
        [ -e "$f" ] && [ ! -L "$f" ] && chown root:kinesis-agent "$f"
    done
    chmod 0750 /etc/aws-kinesis/agent.d 2>/dev/null || true
    # Enabled also in a chroot or image build, where systemd is not running.
    systemctl enable kinesis-agent.service >/dev/null 2>&1 || true
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
    if [ "$1" -eq 1 ]; then
        if /usr/bin/kinesis-agent --check-config -c /etc/aws-kinesis/agent.json >/dev/null 2>&1; then
            systemctl start kinesis-agent.service || true
        else
            echo "kinesis-agent: add a flow to /etc/aws-kinesis/agent.json, then: systemctl start kinesis-agent"
        fi
    fi
fi
