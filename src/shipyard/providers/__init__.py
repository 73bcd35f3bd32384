"""Model backends behind one small protocol.

Public: ``base`` (``Provider``, ``BaseProvider``, ``Call``, ``Completion``, ``StreamChunk``,
``Embeddings``, ``Health``, ``WorkerStatus``, ``SupervisesWorkers``), and the built-in types
registered through the plugin hook: ``local`` (llama.cpp in supervised model workers: ``workers``
in the gateway, ``model_worker`` in each worker process), ``openai_compat``, ``mock`` (the shipped
fake, and ``mock_upstream`` serving it over HTTP), ``wordllama``. ``prompt_formats`` turns chat
messages into prompts for local models.
"""
